"""`restem export --model <ref>`: one model of the loop as a folder that stands on its own.

With `--merged`, a LoRA adapter model (improve.adapter: lora) is merged into its base's weights and written as a
whole Hugging Face checkpoint (safetensors + config + tokenizer), in the base's dtype, that any tool loads without
peft or restem; its restem.json keeps the lineage: the adapter's hash as `parent`, the adapter and base folders and
hashes under `params.merged_from`, and the adapter's training data and loss curve. Without `--merged` (or for a
model that holds whole weights) the model's folder is copied as it is: an adapter stays an adapter, whose
adapter_config.json names its base by workspace folder (models/iter0).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from restem.schemas.errors import RestemError
from restem.schemas.io import atomic_dir, write_json
from restem.workspace import META_FILE, model_dir


def export_model(root: Path, ref: int | str, out: Path, merged: bool = False, force: bool = False) -> Path:
    """Write model `ref` of workspace `root` to the new folder `out` (see the module doc); returns `out`."""
    from restem.publish.export import _check_output
    from restem.training.adapters import is_adapter
    from restem.training.modeling import load_policy, read_meta, resolve_model, save_policy, stored_dtype

    root, out = Path(root), Path(out)
    folder = model_dir(ref, root)
    _check_output(out, root, force)
    weights, adapter = resolve_model(folder)
    meta = read_meta(folder)
    if adapter is None or not merged:
        with atomic_dir(out) as tmp:
            shutil.copytree(adapter or weights, tmp, dirs_exist_ok=True)
            if meta is not None:  # the lineage; a pointer to the user's checkpoint now has the files beside it
                write_json(tmp / META_FILE, json.loads(meta.model_copy(update={"checkpoint": None}).model_dump_json()))
        return out
    if not is_adapter(folder) or meta is None or meta.adapter is None:
        raise RestemError(f"{folder}: not an adapter model")  # resolve_model rules this out
    model, tokenizer = load_policy(folder, dtype=stored_dtype(folder))
    save_policy(model, tokenizer, out, {
        "iteration": meta.iteration,
        "parent": meta.model_hash,
        "training_data": meta.training_data,
        "params": meta.params | {"merged_from": {
            "adapter": folder.resolve().relative_to(root.resolve()).as_posix(), "adapter_hash": meta.model_hash,
            "base": meta.adapter.base, "base_hash": meta.adapter.base_hash}},
        "train_log": meta.train_log,
    })
    return out
