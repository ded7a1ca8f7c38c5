"""The embedded tiny model: the `base` recipe (a small Llama or Qwen2 on the character tokenizer or a
byte-level BPE one) trained by SFT on the demonstrations. The base stage trains it with
`base.train.seed`, the voters with their own seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.io import read_rows
from restem.schemas.params import BaseParams, Params
from restem.schemas.tables import ModelMeta, Problem
from restem.training.data import demonstration_rows
from restem.training.modeling import build_char_tokenizer, build_model, save_policy
from restem.workspace import log, problems_dir

if TYPE_CHECKING:  # heavy imports stay inside functions
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def tiny_recipe(params: Params, seed: int):
    """The `base` section with its training seed replaced: what `train_tiny` trains with that seed."""
    return params.base.model_copy(update={"train": params.base.train.model_copy(update={"seed": seed})})


def tiny_tokenizer(base: BaseParams, texts: Sequence[str]) -> "PreTrainedTokenizerBase":
    """The tokenizer of `base.tokenizer`: the character one (every character of `texts` must be in it), or a
    byte-level BPE with a ChatML chat template trained on `texts` (restem/training/bpe.py)."""
    if base.tokenizer == "bpe":
        from restem.training.bpe import build_bpe_tokenizer

        return build_bpe_tokenizer(texts, base.vocab_size)
    tokenizer = build_char_tokenizer()
    unknown = sorted({ch for text in texts for ch in text if tokenizer.convert_tokens_to_ids(ch) == tokenizer.unk_token_id})
    if unknown:
        raise RestemError(f"demonstrations use characters the built-in tokenizer lacks: {unknown}; "
                          "set base.tokenizer: bpe, or point base.checkpoint at a model with its own tokenizer")
    return tokenizer


def tiny_model(base: BaseParams, tokenizer: "PreTrainedTokenizerBase", seed: int) -> "PreTrainedModel":
    """A fresh model of `base.model` for `tokenizer`; with the BPE tokenizer its generation_config stops on
    `<|im_end|>` or `<|endoftext|>`, as an instruct checkpoint's does."""
    model = build_model(tokenizer, base.model, seed)
    if base.tokenizer == "bpe":
        from restem.training.bpe import set_generation_ids

        set_generation_ids(model, tokenizer)
    return model


def train_tiny(params: Params, root: Path, out: Path, seed: int, iteration: int | str = 0,
               label: str = "base", hinted: bool = False) -> ModelMeta:
    """Train the tiny model of `base` on the demonstrations with `base.train`, its seed replaced by `seed`
    (initialisation and shuffling), and save it to `out` as a Hugging Face folder (tokenizer, with its chat
    template when it has one, included). A BPE tokenizer is trained first, on the demonstrations' prompts
    and solutions. Prompts are rendered as the policy will be given them when sampled (params `prompt`,
    restem/prompting.py). `hinted` (the base): also on `rationalize.hint_demos` of them with hinted prompts
    (restem/rationalize.py)."""
    demos = [d for d in read_rows(problems_dir(root) / "demos.parquet", Problem) if d["solution"] is not None]
    if not demos:
        raise RestemError(f"{problems_dir(root) / 'demos.parquet'}: no demonstrations to train the {label} model on")
    recipe = tiny_recipe(params, seed)
    tokenizer = tiny_tokenizer(recipe, [text for d in demos for text in (d["prompt"], d["solution"])])
    rows = demonstration_rows(root, tokenizer, params.prompt, params.rationalize if hinted else None)
    pairs = [(r.prompt, r.completion) for r in rows]
    if recipe.tokenizer == "char":  # a template, few-shot file or hint may bring characters of its own
        tiny_tokenizer(recipe, [text for pair in pairs for text in pair])
    model = tiny_model(recipe, tokenizer, seed)
    from restem.training.sft import train_sft

    n_params = sum(p.numel() for p in model.parameters())
    log(f"{label}: training a {n_params / 1e6:.2f}M-parameter {type(model).__name__} ({recipe.tokenizer} tokenizer, "
        f"{len(tokenizer)} tokens) on {len(pairs)} demonstrations (seed {seed})")
    train_log = train_sft(model, tokenizer, pairs, recipe.train, recipe.model.max_positions,
                          precision=params.runtime.precision, spec=params.prompt)
    log(f"{label}: loss {train_log[0]['loss']:.3f} -> {train_log[-1]['loss']:.3f}")
    if train_log[-1].get("stop") == "loss_target":
        log(f"{label}: stopped after epoch {train_log[-1]['epoch']}, whose mean loss "
            f"{train_log[-1]['epoch_loss']:.4f} is below base.train.loss_target {recipe.train.loss_target}")
    return save_policy(model, tokenizer, out, {
        "iteration": iteration,
        "training_data": content_hash(sorted(d["problem_id"] for d in demos)),
        "params": json.loads(recipe.model_dump_json()),
        "train_log": train_log,
    })
