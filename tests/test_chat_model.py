"""The locally built chat model: byte-level BPE tokenizer with a ChatML template (restem/training/bpe.py), a Qwen2
base trained by the base stage, the `qwen_checkpoint` fixture, and the `gsm8k` preset."""

from __future__ import annotations

import copy
import hashlib
import json
import random

import pytest

from conftest import QWEN_BASE, TINY, gsm8k_train_rows, real_data
from restem.training.bpe import CHAT_TEMPLATE, DEFAULT_SYSTEM, END_OF_TEXT, IM_END, IM_START, build_bpe_tokenizer


def _texts(rows: list[dict]) -> list[str]:
    return [text for r in rows for text in (r["question"], r["answer"])]


@pytest.fixture(scope="module")
def bpe():
    return build_bpe_tokenizer(_texts(gsm8k_train_rows()), 512)


def _files(tokenizer, folder) -> dict[str, str]:
    tokenizer.save_pretrained(folder)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_bpe_tokenizer_is_deterministic(tmp_path):
    """Same texts -> the same tokenizer files, byte for byte, whatever order the rows come in."""
    texts = _texts(gsm8k_train_rows())
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    first = _files(build_bpe_tokenizer(texts, 600), tmp_path / "a")
    assert first == _files(build_bpe_tokenizer(texts, 600), tmp_path / "b")
    assert first == _files(build_bpe_tokenizer(shuffled, 600), tmp_path / "c")
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(first)
    assert first != _files(build_bpe_tokenizer(texts[:200], 600), tmp_path / "d")  # the texts do matter


def test_bpe_round_trips_gsm8k_text(bpe):
    """Byte-level: every string decodes back exactly, text the tokenizer never saw included; merges shorten it."""
    test_rows = [json.loads(line) for line in real_data("gsm8k/test.jsonl").read_text().splitlines()]
    texts = _texts(gsm8k_train_rows()) + _texts(test_rows) + ["café ☕ costs 3½ €, x² + 1 = 0\n\t  done"]
    lengths = []
    for text in texts:
        ids = bpe(text).input_ids
        assert bpe.decode(ids) == text
        lengths.append((len(ids), len(text.encode())))
    assert len(bpe) == 512
    assert sum(n for n, _ in lengths) < 0.6 * sum(b for _, b in lengths)  # BPE merges, not bytes (about 0.5)


def test_chat_template_and_markup_tokens(bpe):
    """ChatML with a default system turn; the markup is one special token each, never split or merged."""
    user = [{"role": "user", "content": "What is 2+3?"}]
    text = bpe.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text == (f"{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n{IM_START}user\nWhat is 2+3?{IM_END}\n"
                    f"{IM_START}assistant\n")
    convo = [{"role": "system", "content": "Be brief."}, *user, {"role": "assistant", "content": "5"}]
    text = bpe.apply_chat_template(convo, tokenize=False)
    assert text == f"{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\nWhat is 2+3?{IM_END}\n{IM_START}assistant\n5{IM_END}\n"
    assert DEFAULT_SYSTEM not in text
    ids = bpe(text).input_ids
    start, end, eot = (bpe.convert_tokens_to_ids(t) for t in (IM_START, IM_END, END_OF_TEXT))
    assert len({start, end, eot}) == 3 and bpe.unk_token_id is None
    assert ids.count(start) == 3 and ids.count(end) == 3 and ids[0] == start
    for token in (IM_START, IM_END, END_OF_TEXT):
        assert bpe.tokenize(token) == [token]
    assert bpe.eos_token == IM_END and bpe.pad_token == END_OF_TEXT and bpe.bos_token is None
    assert bpe.chat_template == CHAT_TEMPLATE
    assert bpe.decode(ids) == text and bpe.decode(ids, skip_special_tokens=True).startswith("system\nBe brief.")


def test_qwen_checkpoint_fixture(qwen_checkpoint):
    """The fixture is a real instruct-style folder: Qwen2 config, the chat template saved with the tokenizer,
    end-of-turn ids in its generation_config, a loss that fell; it answers in GSM8K style and ends its turn."""
    from transformers import AutoTokenizer

    from restem.training.modeling import load_policy, read_meta

    model, tok = load_policy(qwen_checkpoint)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 1_000_000
    assert AutoTokenizer.from_pretrained(qwen_checkpoint).chat_template == CHAT_TEMPLATE
    assert (qwen_checkpoint / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (qwen_checkpoint / "tokenizer_config.json").read_text())
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids([IM_END, END_OF_TEXT])
    assert model.generation_config.pad_token_id == tok.convert_tokens_to_ids(END_OF_TEXT)
    log = read_meta(qwen_checkpoint).train_log
    assert log[-1]["loss"] < log[0]["loss"] - 1.5
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine, set_threads

    rows = sorted(gsm8k_train_rows(), key=lambda r: len(r["answer"]))[:4]
    prompts = [tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                       add_generation_prompt=True) for r in rows]
    set_threads(1)
    out = TransformersEngine(model, tok).generate([Request(p, 0) for p in prompts], SamplingParams(0.0, 160))
    assert all(c.completion_tokens > 0 and c.prompt_tokens == len(tok(p).input_ids) for c, p in zip(out, prompts))
    assert any(c.finish_reason == "eos" for c in out)  # it learnt to close its turn with <|im_end|>
    assert any("=" in c.text for c in out)


def _gsm8k_workspace(root, demos: int, pool: int, test: int):
    """inputs/problems/{demo,train,test}.parquet imported from the GSM8K slices (the demos: the shortest rows)."""
    from restem.publish.importers import import_problems

    rows = sorted(gsm8k_train_rows(), key=lambda r: (len(r["question"]) + len(r["answer"]), r["question"]))
    test_rows = [json.loads(line) for line in real_data("gsm8k/test.jsonl").read_text().splitlines()]
    folder = root / "inputs" / "problems"
    folder.mkdir(parents=True)
    for split, chosen in (("demo", rows[:demos]), ("train", rows[demos:demos + pool]), ("test", test_rows[:test])):
        raw = root / f"{split}.jsonl"
        raw.write_text("".join(json.dumps(r) + "\n" for r in chosen))
        import_problems(raw, "gsm8k", folder / f"{split}.parquet", split=split)
    return {"train": "inputs/problems/train.parquet", "test": "inputs/problems/test.parquet",
            "demos": "inputs/problems/demo.parquet"}


def test_base_stage_trains_a_qwen2_with_its_bpe_tokenizer(tmp_path):
    """`base.tokenizer: bpe` + `architecture: qwen2`: the base stage trains the tokenizer on the demonstrations'
    text, then the model; the saved folder loads as a Qwen2 with its chat template, its loss fell, and it
    generates through restem's engine."""
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine
    from restem.schemas.io import read_rows
    from restem.schemas.params import Params
    from restem.schemas.tables import Problem
    from restem.stages import base, problems
    from restem.training.modeling import load_policy, read_meta
    from restem.workspace import model_dir, problems_dir

    raw = copy.deepcopy(TINY)
    raw["problems"] = {"source": "files", "seed": 0, "files": _gsm8k_workspace(tmp_path, 160, 4, 4)}
    raw["base"] = copy.deepcopy(QWEN_BASE)
    raw["base"]["model"].update(hidden_size=64, intermediate_size=128)
    raw["base"]["train"].update(steps=50, lr=5e-3)
    raw["score"]["verifier"] = "gsm8k"
    params = Params.model_validate(raw)
    problems.run(params, tmp_path)
    base.run(params, tmp_path)
    folder = model_dir(0, tmp_path)
    meta = read_meta(folder)
    assert meta.params["tokenizer"] == "bpe" and meta.params["model"]["architecture"] == "qwen2"
    assert meta.train_log[-1]["loss"] < meta.train_log[0]["loss"] - 1.0
    model, tok = load_policy(folder)
    assert type(model).__name__ == "Qwen2ForCausalLM" and len(tok) == 512 and tok.chat_template == CHAT_TEMPLATE
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids([IM_END, END_OF_TEXT])
    prompts = [p["prompt"] for p in read_rows(problems_dir(tmp_path) / "test.parquet", Problem)]
    out = TransformersEngine(model, tok).generate([Request(p, 0) for p in prompts], SamplingParams(0.0, 24))
    assert len(out) == 4 and all(c.completion_tokens > 0 and c.text for c in out)
    # Default params are unchanged by the new keys: nothing of them in a dump (restem.json, DVC's params).
    assert "tokenizer" not in TINY["base"]
    dumped = Params.model_validate(TINY).base.model_dump()
    assert "tokenizer" not in dumped and "vocab_size" not in dumped and "architecture" not in dumped["model"]


def test_bpe_params_are_checked():
    from pydantic import ValidationError

    from restem.schemas.params import BaseParams

    with pytest.raises(ValidationError, match="vocab_size sizes the bpe tokenizer"):
        BaseParams.model_validate({**QWEN_BASE, "tokenizer": "char", "vocab_size": 600})
    nope = copy.deepcopy(QWEN_BASE)
    nope["model"]["position"] = "none"
    with pytest.raises(ValidationError, match="NoPE"):
        BaseParams.model_validate(nope)
    with pytest.raises(ValueError, match="below the 256 byte symbols"):
        build_bpe_tokenizer(["abc"], 100)


def test_gsm8k_preset(bpe):
    """The gsm8k preset validates and builds its chat model from the demonstrations alone; its token budgets fit
    GSM8K with a tokenizer of its size: max_new_tokens holds 95% of solutions, the context holds the longest
    question in chat markup plus max_new_tokens."""
    from restem.schemas.presets import load_preset

    params = load_preset("gsm8k")
    assert params.problems.source == "files" and params.problems.files.demos and params.base.checkpoint is None
    assert (params.base.tokenizer, params.base.model.architecture) == ("bpe", "qwen2")
    assert params.score.verifier == "gsm8k" and params.filter.mode == "correct"
    tok = build_bpe_tokenizer(_texts(gsm8k_train_rows()), params.base.vocab_size)
    test_rows = [json.loads(line) for line in real_data("gsm8k/test.jsonl").read_text().splitlines()]
    solutions = sorted(len(tok(r["answer"]).input_ids) + 1 for r in gsm8k_train_rows() + test_rows)
    for budget in (params.grow.max_new_tokens, params.evaluate.max_new_tokens):
        assert budget >= solutions[int(0.95 * len(solutions))]
    longest_ids = max(len(tok(tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                                      add_generation_prompt=True)).input_ids)
                      for r in gsm8k_train_rows() + test_rows)
    assert params.base.model.max_positions >= longest_ids + max(params.grow.max_new_tokens, params.evaluate.max_new_tokens)
