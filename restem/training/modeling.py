"""Tokenizer, model and checkpoint folders.

The embedded default builds a character-level tokenizer with `tokenizers` (wrapped as a
`PreTrainedTokenizerFast`) and a small `LlamaForCausalLM` from a config (or, with
`base.model.position: none`, the same shape without positional encoding as a stock SmolLM3 config;
with `base.model.architecture: qwen2`, a `Qwen2ForCausalLM`; with `base.tokenizer: bpe`, the byte-level
BPE tokenizer of restem/training/bpe.py);
a user's own checkpoint is any local Hugging Face causal-LM folder. Either way a policy is a folder
that `load_policy` opens, and `models/iter<i>/restem.json` records where it came from. With
`improve.adapter: lora` an iteration's folder holds a LoRA adapter on a base instead (restem/training/adapters.py):
`resolve_model` names both folders, `load_policy` merges the adapter in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash, folder_hash
from restem.schemas.io import write_json
from restem.schemas.tables import ModelMeta
from restem.workspace import META_FILE

if TYPE_CHECKING:  # heavy imports stay inside functions
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Characters of the embedded task and of simple user tasks (digits, operators, separators, letters).
CHARSET = "0123456789+-*/=,;.:()# abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ?!'\"\n"


def build_char_tokenizer(charset: str = CHARSET) -> "PreTrainedTokenizerBase":
    """A character-level fast tokenizer: one token per character, BOS prepended, left padding."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in charset:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _shape(tokenizer: "PreTrainedTokenizerBase", arch: Any) -> dict:
    """The config fields both architectures take from `base.model` and the tokenizer."""
    return dict(vocab_size=len(tokenizer), hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                num_hidden_layers=arch.layers, num_attention_heads=arch.heads, num_key_value_heads=arch.heads,
                max_position_embeddings=arch.max_positions, rms_norm_eps=1e-6, tie_word_embeddings=True,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def _nope_model(tokenizer: "PreTrainedTokenizerBase", arch: Any) -> "PreTrainedModel":
    """A Llama-shaped model with no positional encoding (NoPE), in a stock architecture.

    SmolLM3 is Llama (RMSNorm, SwiGLU, tied embeddings) plus a per-layer switch `no_rope_layers`
    (1: rotary, 0: none). With 0 in every layer no attention layer sees a position, and the model has
    no position parameters at all, so training cannot bring one back. transformers and vLLM load the
    saved config as it is (no remote code): in both, a layer whose switch is 0 skips the rotation.
    """
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    config = SmolLM3Config(**_shape(tokenizer, arch), no_rope_layers=[0] * arch.layers, use_sliding_window=False)
    return SmolLM3ForCausalLM(config)


def is_nope(model: "PreTrainedModel") -> bool:
    """True when no layer of `model` applies rotary embeddings (a NoPE SmolLM3 from `build_model`)."""
    layers = getattr(model.config, "no_rope_layers", None)
    return bool(layers) and not any(layers)


def build_model(tokenizer: "PreTrainedTokenizerBase", arch: Any, seed: int) -> "PreTrainedModel":
    """A freshly initialised model of the shape in `arch` (params: base.model): LlamaForCausalLM,
    Qwen2ForCausalLM with `architecture: qwen2`, or with `position: none` a Llama shape without
    positional encoding (see `_nope_model`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if getattr(arch, "position", "rope") == "none":
        model = _nope_model(tokenizer, arch)
    elif getattr(arch, "architecture", "llama") == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**_shape(tokenizer, arch), use_sliding_window=False))
    else:
        model = LlamaForCausalLM(LlamaConfig(**_shape(tokenizer, arch)))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def read_meta(folder: Path) -> Optional[ModelMeta]:
    path = Path(folder) / META_FILE
    if not path.exists():
        return None
    return ModelMeta.model_validate_json(path.read_text())


def resolve_checkpoint(folder: Path) -> Path:
    """The folder holding the weights: `folder` itself, or the external checkpoint it stands for. A LoRA adapter
    folder holds no whole weights: use `resolve_model` for it (an error here, so that nothing loads its base
    alone by mistake)."""
    weights, adapter = resolve_model(folder)
    if adapter is not None:
        raise RestemError(f"{folder}: holds a LoRA adapter, not whole weights (improve.adapter: lora); load it "
                          "with load_policy, or write a merged checkpoint with `restem export --model <ref> --merged`")
    return weights


def resolve_model(folder: Path) -> tuple[Path, Optional[Path]]:
    """(folder of the whole weights, adapter folder or None) of a model folder: a checkpoint, a restem.json that
    points to the user's checkpoint, or a LoRA adapter (restem/training/adapters.py) on one of those."""
    from restem.training.adapters import adapter_base, is_adapter

    folder = Path(folder)
    if not folder.is_dir():
        raise RestemError(f"{folder}: model folder not found (run `dvc repro` to build it)")
    meta = read_meta(folder)
    if is_adapter(folder):
        return resolve_model(adapter_base(folder, meta))[0], folder
    if meta is not None and meta.checkpoint:
        target = Path(meta.checkpoint)
        if not target.is_dir():
            raise RestemError(f"{folder}/{META_FILE}: checkpoint {target} is not a folder (params: base.checkpoint)")
        return target, None
    return folder, None


def link_checkpoint(checkpoint: str | Path, out: Path, field: str, iteration: int | str = 0,
                    kind: str = "a local folder made by save_pretrained") -> ModelMeta:
    """Write `out/restem.json` standing for the user's checkpoint folder that params `field` names (`kind`: what
    it must be), recorded by path and content hash; no weights are copied."""
    from restem.schemas.io import atomic_dir

    path = Path(checkpoint).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise RestemError(f"{path}: not a Hugging Face checkpoint folder (no config.json); "
                          f"params: {field} must name {kind}")
    meta = ModelMeta(model_hash=folder_hash(path), iteration=iteration, checkpoint=str(path),
                     params={"checkpoint": str(path)})
    with atomic_dir(out) as tmp:
        write_json(tmp / META_FILE, json.loads(meta.model_dump_json()))
    return meta


def model_hash(folder: Path) -> str:
    """The content hash recorded in restem.json, or computed from the files when there is none."""
    meta = read_meta(folder)
    return meta.model_hash if meta is not None else folder_hash(Path(folder))


def load_policy(folder: Path, dtype: str = "float32", merge: bool = True
                ) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load (model, tokenizer) from a policy folder, in eval mode, tokenizer padding on the left. A LoRA adapter
    folder loads its base with the adapter merged into the weights (`merge`; False: a peft PeftModel)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, adapter = resolve_model(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(adapter or path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=getattr(torch, dtype)
        )
    except (OSError, ValueError) as exc:
        raise RestemError(f"{path}: not a loadable Hugging Face causal-LM checkpoint ({exc})") from exc
    if adapter is not None:
        from restem.training.adapters import attach, load_merged

        model = load_merged(model, adapter) if merge else attach(model, adapter)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def stored_dtype(folder: Path) -> str:
    """The dtype a policy folder's weights are stored in: its config's `dtype` (`torch_dtype` in files written
    before transformers 5); float32 when it names none or no floating-point type. A LoRA adapter folder: its base's."""
    config = json.loads((resolve_model(folder)[0] / "config.json").read_text())
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in ("float32", "bfloat16", "float16") else "float32"


def training_environment(model: "PreTrainedModel") -> dict:
    """What the weights' float rounding may depend on: torch and transformers versions, torch's thread count, the
    CPU model and the vector instructions torch's CPU kernels use (`cpu_capability`: a virtual machine's CPU name
    need not tell them), and the device the model sits on (the GPU's name on CUDA). Recorded in restem.json,
    beside the lineage."""
    import platform

    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = next(model.parameters()).device
    return {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "python": platform.python_version()}


def save_policy(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", folder: Path, meta: dict, dtype: str | None = None,
    state_dict: dict | None = None,
) -> ModelMeta:
    """Save a checkpoint folder (safetensors + tokenizer + config) atomically, with restem.json.

    With `dtype` (e.g. from `stored_dtype` of the model it started from) the model is first cast to it in place:
    training keeps float32 weights, and a bfloat16 checkpoint would otherwise come back twice its size.
    `state_dict`: the weights to write instead of the model's own (the full weights gathered from a sharded run;
    see `train_loop`'s `full_state`).

    A peft model with `meta["adapter"]` (an AdapterBase: the model it applies to) saves only its adapter; its
    model_hash then covers the adapter's files and the base's hash, so it names the whole model.

    restem.json records the training environment too. model_hash is taken before restem.json is written (and
    folder_hash skips it), so the hash and every downstream sample id stay the same across machines when the
    weights do; only restem.json's bytes differ, so DVC's hash of the whole models/iter<i> output differs
    between machines (or thread counts) even for equal weights. That is honest: it says where a model came from.
    """
    from restem.schemas.io import atomic_dir

    if dtype is not None:
        import torch

        model.to(getattr(torch, dtype))
        if state_dict:
            state_dict = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in state_dict.items()}
    with atomic_dir(Path(folder)) as tmp:
        adapter = meta.get("adapter")
        if adapter is not None:
            from restem.training.adapters import save_adapter_files

            save_adapter_files(model, tmp, adapter.base, state_dict)
        else:
            model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
        tokenizer.save_pretrained(tmp)
        files = folder_hash(tmp)
        written = ModelMeta(model_hash=files if adapter is None else content_hash("adapter", files, adapter.base_hash),
                            **{"environment": training_environment(model), **meta})
        write_json(tmp / META_FILE, json.loads(written.model_dump_json()))
    return written
