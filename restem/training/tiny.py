"""The embedded tiny model: the `base` recipe (a small Llama on the character tokenizer) trained by SFT on
the demonstrations. The base stage trains it with `base.train.seed`, the voters with their own seeds."""

from __future__ import annotations

import json
from pathlib import Path

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.io import read_rows
from restem.schemas.params import Params
from restem.schemas.tables import ModelMeta, Problem
from restem.training.data import demonstration_rows
from restem.training.modeling import build_char_tokenizer, build_model, save_policy
from restem.workspace import log, problems_dir


def tiny_recipe(params: Params, seed: int):
    """The `base` section with its training seed replaced: what `train_tiny` trains with that seed."""
    return params.base.model_copy(update={"train": params.base.train.model_copy(update={"seed": seed})})


def train_tiny(params: Params, root: Path, out: Path, seed: int, iteration: int | str = 0,
               label: str = "base", hinted: bool = False) -> ModelMeta:
    """Train the tiny Llama of `base.model` on the demonstrations with `base.train`, its seed replaced by
    `seed` (initialisation and shuffling), and save it to `out` as a Hugging Face folder. `hinted` (the base):
    also on `rationalize.hint_demos` of them with hinted prompts (restem/rationalize.py)."""
    demos = read_rows(problems_dir(root) / "demos.parquet", Problem)
    if not demos:
        raise RestemError(f"{problems_dir(root) / 'demos.parquet'}: no demonstrations to train the {label} model on")
    tokenizer = build_char_tokenizer()
    # Prompts as the model will be given them when sampled (params `prompt`), demonstrations without solutions left out.
    rows = demonstration_rows(root, tokenizer, params.prompt, params.rationalize if hinted else None)
    pairs = [(r.prompt, r.completion) for r in rows]
    unknown = sorted({ch for p, s in pairs for ch in p + s if tokenizer.convert_tokens_to_ids(ch) == tokenizer.unk_token_id})
    if unknown:
        raise RestemError(f"demonstrations use characters the built-in tokenizer lacks: {unknown}; "
                          "point base.checkpoint at a model with its own tokenizer")
    recipe = tiny_recipe(params, seed)
    model = build_model(tokenizer, recipe.model, seed)
    from restem.training.sft import train_sft

    n_params = sum(p.numel() for p in model.parameters())
    log(f"{label}: training a {n_params / 1e6:.2f}M-parameter Llama on {len(pairs)} demonstrations (seed {seed})")
    train_log = train_sft(model, tokenizer, pairs, recipe.train, recipe.model.max_positions,
                          precision=params.runtime.precision, spec=params.prompt)
    log(f"{label}: loss {train_log[0]['loss']:.3f} -> {train_log[-1]['loss']:.3f}")
    return save_policy(model, tokenizer, out, {
        "iteration": iteration,
        "training_data": content_hash(sorted(d["problem_id"] for d in demos)),
        "params": json.loads(recipe.model_dump_json()),
        "train_log": train_log,
    })
