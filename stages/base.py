"""Stage `base`: the starting policy, `models/iter0`.

Default: builds the character tokenizer and a small Llama from `base.model` and trains it by SFT on
the demonstrations (`data/problems/demos.parquet`). With `base.checkpoint` set, no training happens:
`models/iter0/restem.json` points at the user's local Hugging Face checkpoint (in `inputs/base/`, a dep of
this stage, so replacing its weights reruns it) and records its hash.
Like every Improve, it also writes the rows it trained on, `data/iter0/train.parquet` (the
demonstrations; empty for a user's checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.io import read_rows, write_rows
from restem.schemas.params import Params, load_params
from restem.schemas.tables import Kept, ModelMeta, Problem
from restem.workspace import iter_dir, log, model_dir, problems_dir, parse_args, stage_main, user_input
from restem.sampling.engines import set_threads
from restem.training.modeling import build_char_tokenizer, build_model, link_checkpoint, save_policy


def tiny_recipe(params: Params, seed: int):
    """The `base` section with its training seed replaced: what `train_tiny` trains with that seed."""
    return params.base.model_copy(update={"train": params.base.train.model_copy(update={"seed": seed})})


def train_tiny(params: Params, root: Path, out: Path, seed: int, iteration: int | str = 0,
               label: str = "base") -> ModelMeta:
    """Train the tiny Llama of `base.model` on the demonstrations with `base.train`, its seed replaced by
    `seed` (initialisation and shuffling), and save it to `out` as a Hugging Face folder."""
    demos = read_rows(problems_dir(root) / "demos.parquet", Problem)
    if not demos:
        raise RestemError(f"{problems_dir(root) / 'demos.parquet'}: no demonstrations to train the {label} model on")
    pairs = [(d["prompt"], d["solution"]) for d in demos]
    tokenizer = build_char_tokenizer()
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
                          precision=params.runtime.precision)
    log(f"{label}: loss {train_log[0]['loss']:.3f} -> {train_log[-1]['loss']:.3f}")
    return save_policy(model, tokenizer, out, {
        "iteration": iteration,
        "training_data": content_hash(sorted(d["problem_id"] for d in demos)),
        "params": json.loads(recipe.model_dump_json()),
        "train_log": train_log,
    })


def run(params: Params, root: Path = Path(".")) -> ModelMeta:
    from restem.stages.improve import demonstration_rows

    out = model_dir(0, root)
    trained_on = iter_dir(0, root) / "train.parquet"
    if params.base.checkpoint:
        meta = link_checkpoint(user_input(params.base.checkpoint, "base", "base.checkpoint", root), out,
                               "base.checkpoint")
        write_rows(trained_on, Kept, [])
        log(f"base: using checkpoint {meta.checkpoint} ({meta.model_hash})")
        return meta
    set_threads(params.runtime.threads)
    meta = train_tiny(params, root, out, params.base.train.seed)
    write_rows(trained_on, Kept, demonstration_rows(root))
    return meta


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args("base", __doc__, argv)
    run(load_params(args.params))


if __name__ == "__main__":
    main()
