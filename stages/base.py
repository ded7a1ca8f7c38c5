"""Stage `base`: the starting policy, `models/iter0`.

Default: builds the character tokenizer and a small Llama from `base.model` and trains it by SFT on
the demonstrations (`data/problems/demos.parquet`). With `base.checkpoint` set, no training happens:
`models/iter0/restem.json` points at the user's local Hugging Face checkpoint (in `inputs/base/`, a dep of
this stage, so replacing its weights reruns it) and records its hash.
Like every Improve, it also writes the rows it trained on, `data/iter0/train.parquet` (the
demonstrations; empty for a user's checkpoint).
"""

from __future__ import annotations

from pathlib import Path

from restem.schemas.io import write_rows
from restem.schemas.params import Params
from restem.schemas.tables import Kept, ModelMeta
from restem.workspace import iter_dir, log, model_dir, user_input
from restem.sampling.engines import set_threads
from restem.training.data import demonstration_rows
from restem.training.modeling import link_checkpoint, load_policy
from restem.training.tiny import train_tiny


def run(params: Params, root: Path = Path(".")) -> ModelMeta:
    out = model_dir(0, root)
    trained_on = iter_dir(0, root) / "train.parquet"
    if params.base.checkpoint:
        meta = link_checkpoint(user_input(params.base.checkpoint, "base", "base.checkpoint", root), out,
                               "base.checkpoint")
        write_rows(trained_on, Kept, [])
        log(f"base: using checkpoint {meta.checkpoint} ({meta.model_hash})")
        return meta
    set_threads(params.runtime.threads)
    meta = train_tiny(params, root, out, params.base.train.seed, hinted=True)
    tokenizer = load_policy(out)[1]  # a chat prompt spec renders through the trained model's own template
    write_rows(trained_on, Kept, demonstration_rows(root, tokenizer, params.prompt, params.rationalize))
    return meta


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("base")
