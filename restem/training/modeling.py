"""Tokenizer, model and checkpoint folders.

The embedded default builds a character-level tokenizer with `tokenizers` (wrapped as a
`PreTrainedTokenizerFast`) and a small `LlamaForCausalLM` from a config (or, with
`base.model.position: none`, the same shape without positional encoding as a stock SmolLM3 config;
with `base.model.architecture: qwen2`, a `Qwen2ForCausalLM`; with `base.tokenizer: bpe`, the byte-level
BPE tokenizer of restem/training/bpe.py);
a user's own checkpoint is any local Hugging Face causal-LM folder. Either way a policy is a folder
that `load_policy` opens, and `models/iter<i>/restem.json` records where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from restem.schemas.errors import RestemError
from restem.schemas.hashing import folder_hash
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
    """The folder holding the weights: `folder` itself, or the external checkpoint it stands for."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RestemError(f"{folder}: model folder not found (run `dvc repro` to build it)")
    meta = read_meta(folder)
    if meta is not None and meta.checkpoint:
        target = Path(meta.checkpoint)
        if not target.is_dir():
            raise RestemError(f"{folder}/{META_FILE}: checkpoint {target} is not a folder (params: base.checkpoint)")
        return target
    return folder


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


def load_policy(folder: Path, dtype: str = "float32") -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load (model, tokenizer) from a policy folder, in eval mode, tokenizer padding on the left."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_checkpoint(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=getattr(torch, dtype)
        )
    except (OSError, ValueError) as exc:
        raise RestemError(f"{path}: not a loadable Hugging Face causal-LM checkpoint ({exc})") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def save_policy(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", folder: Path, meta: dict
) -> ModelMeta:
    """Save a checkpoint folder (safetensors + tokenizer + config) atomically, with restem.json."""
    from restem.schemas.io import atomic_dir

    with atomic_dir(Path(folder)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        written = ModelMeta(model_hash=folder_hash(tmp), **meta)
        write_json(tmp / META_FILE, json.loads(written.model_dump_json()))
    return written
