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
from restem.schemas.hashing import folder_hash
from restem.schemas.io import atomic_dir, write_json, write_rows
from restem.schemas.params import Params
from restem.schemas.tables import Kept, ModelMeta
from restem.workspace import iter_dir, log, model_dir, user_input
from restem.sampling.engines import set_threads
from restem.training.data import demonstration_rows
from restem.training.modeling import META_FILE
from restem.training.tiny import train_tiny


def link_checkpoint(checkpoint: str, out: Path) -> ModelMeta:
    """Write `out/restem.json` standing for an external checkpoint folder."""
    path = Path(checkpoint).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise RestemError(f"{path}: not a Hugging Face checkpoint folder (no config.json); "
                          "params: base.checkpoint must name a local folder made by save_pretrained")
    meta = ModelMeta(model_hash=folder_hash(path), iteration=0, checkpoint=str(path), params={"checkpoint": str(path)})
    with atomic_dir(out) as tmp:
        write_json(tmp / META_FILE, json.loads(meta.model_dump_json()))
    return meta


def run(params: Params, root: Path = Path(".")) -> ModelMeta:
    out = model_dir(0, root)
    trained_on = iter_dir(0, root) / "train.parquet"
    if params.base.checkpoint:
        meta = link_checkpoint(str(user_input(params.base.checkpoint, "base", "base.checkpoint", root)), out)
        write_rows(trained_on, Kept, [])
        log(f"base: using checkpoint {meta.checkpoint} ({meta.model_hash})")
        return meta
    set_threads(params.runtime.threads)
    meta = train_tiny(params, root, out, params.base.train.seed)
    write_rows(trained_on, Kept, demonstration_rows(root))
    return meta


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("base")
