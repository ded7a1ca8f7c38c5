"""Shared fixtures: a miniature params set (tiny model, few problems) that runs in seconds."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SLICES = REPO / "tests" / "data"


def real_data(relative: str) -> Path:
    """A real data file: the full set beside the project (`../shared/data`) when it is there, else the
    small slice shipped in `tests/data` (its README says how it was cut), so a fresh clone runs the test."""
    full = SHARED_DATA / relative
    return full if full.exists() else SLICES / relative


def is_slice(path: Path) -> bool:
    return SLICES in path.parents


def pythonpath() -> str:
    """PYTHONPATH for a stage run as a subprocess: this checkout first, then whatever the caller had (an
    environment whose packages come from PYTHONPATH keeps them)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

TINY = {
    "problems": {
        "source": "arithmetic",
        "seed": 0,
        "arithmetic": {
            "demo_digits": {"low": 1, "high": 2},
            "demo_count": 300,
            "extra_demo_digits": 0,
            "extra_demo_count": 0,
            "train_digits": {"low": 1, "high": 2},
            "train_count": 24,
            "test_sets": {"in_dist": 2, "harder": 3},
            "test_count": 8,
        },
    },
    "prompt": {"style": "plain", "template": None, "system": None, "fewshot": None},  # dvc.yaml tracks it
    "base": {
        "checkpoint": None,
        "model": {"hidden_size": 64, "intermediate_size": 128, "layers": 2, "heads": 2, "max_positions": 48},
        "train": {"epochs": 25, "lr": 5e-3, "batch_size": 16, "warmup_ratio": 0.05, "schedule": "cosine",
                  "weight_decay": 0.0, "seed": 0},
    },
    "grow": {"engine": "transformers", "samples_per_problem": 4, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
             "max_new_tokens": 24, "seed": 0, "stop": []},  # voters and reward_model track grow.stop
    "score": {"verifier": "arithmetic", "extraction": "strict"},  # dvc.yaml tracks score.extraction
    "filter": {"mode": "correct", "max_per_problem": 2, "dedup": True, "require_valid_steps": False,
               # dvc.yaml's `voters` stage reads it, so a params file for `dvc repro` has it
               "voters": {"seeds": [], "checkpoints": [], "min_agree": None, "improve": False}},
    "rationalize": {"enabled": False, "samples_per_problem": 4, "temperature": 1.0, "hint": "{reference};{prompt}",
                    "seed": 0, "hint_demos": 0.0},
    "improve": {"epochs": 1, "lr": 1e-3, "batch_size": 16, "warmup_ratio": 0.05, "schedule": "cosine",
                "weight_decay": 0.0, "seed": 0},
    "evaluate": {"samples": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 24, "seed": 0, "stop": []},
    "loop": {"iterations": {"1": {"prev": 0, "init": 0}}, "steps": {}},
    "reward_model": {"checkpoint": None, "problems": 24, "samples_per_problem": 4, "temperature": 1.0,
                     "max_new_tokens": 24, "holdout": 0.25, "seed": 0,
                     "train": {"epochs": 4, "lr": 1e-3, "batch_size": 16, "warmup_ratio": 0.05,
                               "schedule": "cosine", "weight_decay": 0.0, "seed": 0}},
    # float32 on every device, so the suite's thresholds mean the same on a GPU machine; tests/test_gpu.py
    # covers bf16 there.
    "runtime": {"batch_size": 64, "threads": 1, "precision": "float32", "vllm_dtype": "float32"},  # dvc.yaml tracks both
}


@pytest.fixture
def tiny_raw() -> dict:
    """A fresh copy of the miniature params as a plain dict (edit it freely)."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_params(tiny_raw):
    from restem.schemas.params import Params

    return Params.model_validate(tiny_raw)


# What a workspace needs to run the pipeline under DVC: the code, the inputs folders, dvc.yaml and its ignores.
PROJECT_FILES = ("restem", "stages", "schemas", "verifiers", "inputs", "dvc.yaml", "pyproject.toml", ".dvcignore")


def copy_project(root: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy PROJECT_FILES (and `extra` names) of this checkout into `root`, bytecode left out."""
    import shutil

    for name in (*PROJECT_FILES, *extra):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    return root


def write_params(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def trained_root(tmp_path_factory):
    """A workspace with problems and a base model trained well enough to produce some right answers.

    Shared by the tests that need a model that really generates; built once per session.
    """
    from restem.schemas.params import Params
    from restem.stages import base, problems

    raw = copy.deepcopy(TINY)
    # Past the point where the answers' format is settled, so that a GPU's other float rounding (or another
    # torch) still gives a model that writes it; 25 epochs left that to luck.
    raw["base"]["train"]["epochs"] = 50
    params = Params.model_validate(raw)
    root = tmp_path_factory.mktemp("trained")
    problems.run(params, root)
    base.run(params, root)
    return root, params


# A ChatML chat template in the style of Qwen's: no system message given -> its default one.
CHATML = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def fewshot_text(rng, questions: int) -> str:
    """Base-model few-shot text: `Question: What is a plus b?\\nAnswer: c` blocks, a blank line after each."""
    out = ""
    for _ in range(questions):
        a, b = rng.randrange(10), rng.randrange(10)
        out += f"Question: What is {a} plus {b}?\nAnswer: {a + b}\n\n"
    return out


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory) -> Path:
    """A small chat model folder, built in seconds: a byte-level BPE tokenizer trained with `tokenizers` (ChatML
    special tokens, the chat template above), a tiny Qwen2ForCausalLM trained briefly on few-shot question/answer
    text and ChatML turns (so a few-shot prompt makes it write a next "Question:", a chat turn ends in
    <|im_end|>), and a generation_config listing both end-of-turn ids, as Qwen's does."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(0)
    chats = []
    for _ in range(200):
        a, b = rng.randrange(10), rng.randrange(10)
        chats.append(f"<|im_start|>user\nWhat is {a} plus {b}?<|im_end|>\n<|im_start|>assistant\n{a + b}<|im_end|>\n")
    texts = [fewshot_text(rng, 2) for _ in range(200)] + chats
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=specials[1:], chat_template=CHATML,
                                  clean_up_tokenization_spaces=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a loaded machine, two threads for a model this small were 20 times slower
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config)
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(200):  # about 10 s on one core; enough for the format, not for right sums
        batch = [rows[i] for i in torch.randint(len(rows), (8,), generator=gen).tolist()]
        width = max(len(r) for r in batch)
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in batch])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in batch])
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    torch.set_num_threads(threads)
    model.eval()
    model.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, tok.pad_token_id],
                                               pad_token_id=tok.pad_token_id)
    folder = tmp_path_factory.mktemp("chat_model")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
# The `base` section of a tiny ChatML model: byte-level BPE tokenizer and Qwen2, a few hundred k parameters.
QWEN_BASE = {
    "checkpoint": None, "tokenizer": "bpe", "vocab_size": 512,
    "model": {"architecture": "qwen2", "hidden_size": 96, "intermediate_size": 256, "layers": 2, "heads": 4,
              "max_positions": 384},
    "train": {"epochs": 1, "steps": 150, "lr": 3e-3, "batch_size": 8, "warmup_ratio": 0.1, "schedule": "cosine",
              "weight_decay": 0.0, "seed": 0},
}


def gsm8k_train_rows() -> list[dict]:
    """The 416 GSM8K training rows of the slice in tests/data (every 18th row), read from the full file when
    it is there: the same rows either way."""
    import json

    path = real_data("gsm8k/train.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in (lines if is_slice(path) else lines[::18])]


@pytest.fixture(scope="session")
def qwen_checkpoint(tmp_path_factory) -> Path:
    """A local instruct-style checkpoint folder, as a Qwen user brings one: a byte-level BPE tokenizer with a
    ChatML chat template and a tiny Qwen2ForCausalLM, built by restem's own code (restem/training/tiny.py,
    bpe.py) and trained briefly on GSM8K training solutions in chat format (prompt = the user turn rendered by
    `apply_chat_template` with the generation prompt, completion = the solution then `<|im_end|>`), saved with
    `save_pretrained`. Its restem.json `train_log` holds the loss by step."""
    from restem.schemas.params import BaseParams
    from restem.training.modeling import save_policy
    from restem.training.sft import train_sft
    from restem.training.tiny import tiny_model, tiny_tokenizer

    from restem.sampling.engines import set_threads

    import torch

    threads = torch.get_num_threads()
    set_threads(1)  # one thread is the fastest on a shared 2-core machine (two: 4-8x slower when the other is busy)
    base = BaseParams.model_validate(QWEN_BASE)
    rows = gsm8k_train_rows()
    tokenizer = tiny_tokenizer(base, [text for r in rows for text in (r["question"], r["answer"])])
    # The 200 shortest rows: short sequences make steps cheap, so the model learns to end its turn in seconds.
    rows = sorted(rows, key=lambda r: (len(r["question"]) + len(r["answer"]), r["question"]))[:200]
    pairs = [(tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                            add_generation_prompt=True), r["answer"]) for r in rows]
    model = tiny_model(base, tokenizer, seed=0)
    train_log = train_sft(model, tokenizer, pairs, base.train, base.model.max_positions, precision="float32")
    set_threads(threads)
    out = tmp_path_factory.mktemp("qwen") / "checkpoint"
    save_policy(model, tokenizer, out, {"iteration": 0, "params": {"base": QWEN_BASE}, "train_log": train_log})
    return out
