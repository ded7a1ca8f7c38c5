"""LoRA adapters (peft) as models of the loop.

With `improve.adapter: lora` an iteration's model folder `models/iter<i>` holds a LoRA adapter instead of whole
weights: `adapter_model.safetensors` + `adapter_config.json` (peft's files), the tokenizer files (so every engine
reads the tokenizer from the folder it is given), and `restem.json` whose `adapter` field names the model it
applies to (`models/iter0`, which may itself point on to the user's checkpoint) and that model's hash. The
adapter's `model_hash` covers its own files and the base's hash, so it names the whole model.

ReST-EM's "fine-tune the base again" (init is not an adapter) trains a fresh adapter on the init model; a warm
start from an adapter continues that adapter on the same base. Anything that samples from such a folder loads the
base and the adapter: merged into the weights for the transformers engine (`load_merged`), as a LoRA request in
vLLM (restem/sampling/vllm_engine.py). `merge_to_folder` writes the merged weights as a plain checkpoint
(`restem export-model --merged`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from restem.schemas.errors import RestemError
from restem.schemas.tables import AdapterBase, ModelMeta
from restem.workspace import META_FILE

if TYPE_CHECKING:  # heavy imports stay inside functions
    from transformers import PreTrainedModel

ADAPTER_CONFIG = "adapter_config.json"  # peft's file: its presence makes a folder an adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter(folder: Path) -> bool:
    """Whether `folder` holds a peft adapter rather than whole weights."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def workspace_of(folder: Path) -> Path:
    """The workspace root of a model folder `<root>/models/<name>` (adapters name their base relative to it)."""
    folder = Path(folder).resolve()
    if folder.parent.name != "models":
        raise RestemError(f"{folder}: an adapter folder must lie in a workspace's models/ folder, beside the base "
                          "it names (export a merged checkpoint with `restem export-model --merged` to move it)")
    return folder.parent.parent


def adapter_base(folder: Path, meta: Optional[ModelMeta]) -> Path:
    """The folder of the model the adapter in `folder` applies to, checked against the hash it was trained on."""
    from restem.training.modeling import model_hash

    if meta is None or meta.adapter is None:
        raise RestemError(f"{folder}: holds a LoRA adapter ({ADAPTER_CONFIG}) but its {META_FILE} does not name the "
                          "base model it applies to; rebuild it with `dvc repro`")
    base = workspace_of(folder) / meta.adapter.base
    if not base.is_dir():
        raise RestemError(f"{folder}: its adapter applies to {meta.adapter.base}, which is missing "
                          "(run `dvc repro` or `dvc pull` to build it)")
    if is_adapter(base):
        raise RestemError(f"{folder}: its base {meta.adapter.base} is itself an adapter; an adapter applies to whole "
                          "weights (rebuild with `dvc repro`)")
    found = model_hash(base)
    if found != meta.adapter.base_hash:
        raise RestemError(f"{folder}: its adapter was trained on {meta.adapter.base} with model_hash "
                          f"{meta.adapter.base_hash}, but that folder now holds {found}; rerun `dvc repro`")
    return base


def adapter_rank(folder: Path) -> int:
    """The LoRA rank `r` of the adapter in `folder` (vLLM needs it up front)."""
    return int(json.loads((Path(folder) / ADAPTER_CONFIG).read_text())["r"])


def attach(base_model: "PreTrainedModel", adapter: Path, trainable: bool = False):
    """`base_model` wrapped in the peft adapter saved in `adapter` (a PeftModel)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base_model, str(adapter), is_trainable=trainable)
    except (OSError, ValueError, KeyError) as exc:
        raise RestemError(f"{adapter}: not a loadable LoRA adapter for its base model ({exc})") from exc


def load_merged(base_model: "PreTrainedModel", adapter: Path) -> "PreTrainedModel":
    """The base with the adapter's update merged into its weights: a plain model, as fast as the base, whose
    weights train as a loaded checkpoint's do (peft froze them)."""
    return attach(base_model, adapter).merge_and_unload().requires_grad_(True)


def fresh_adapter(model: "PreTrainedModel", lora, seed: int):
    """A new LoRA adapter of shape `lora` (params improve.lora) on `model`; its A matrices drawn from `seed`
    (B starts at zero, so the wrapped model computes what `model` did)."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module name the model does not have
        raise RestemError(f"params improve.lora.target_modules {lora.target_modules!r}: {exc}") from exc


def check_shape(adapter: Path, lora) -> None:
    """A warm start continues the init model's adapter; its shape must be the one params ask for."""
    saved = json.loads((Path(adapter) / ADAPTER_CONFIG).read_text())
    if int(saved["r"]) != lora.rank or float(saved["lora_alpha"]) != float(lora.alpha):
        raise RestemError(f"{adapter}: a warm start continues this adapter (rank {saved['r']}, alpha "
                          f"{saved['lora_alpha']}), but params improve.lora asks for rank {lora.rank}, alpha "
                          f"{lora.alpha}; start from the base (loop init: 0) or set improve.lora to match")


def save_adapter_files(model, tmp: Path, base: str, state_dict: Optional[dict] = None) -> None:
    """peft's adapter files of `model` (a PeftModel) into `tmp`, with nothing that depends on where they were
    written: the base is named by its workspace-relative folder, and peft's generated README is left out."""
    for config in model.peft_config.values():
        config.base_model_name_or_path = base
        if isinstance(config.target_modules, (set, list)):  # peft keeps a set: its order changes per process
            config.target_modules = sorted(config.target_modules)
    # Embeddings are never adapted here; peft's `auto` would look the base up on the Hub to check the vocabulary.
    model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False,
                          **({"state_dict": state_dict} if state_dict else {}))
    (tmp / "README.md").unlink(missing_ok=True)


def adapter_meta(base_folder: Path, root: Path) -> AdapterBase:
    """The `adapter` field of restem.json for an adapter on the model in `base_folder` (inside workspace `root`)."""
    from restem.training.modeling import model_hash

    return AdapterBase(base=Path(base_folder).resolve().relative_to(Path(root).resolve()).as_posix(),
                       base_hash=model_hash(base_folder))
