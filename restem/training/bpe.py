"""A byte-level BPE tokenizer with a ChatML chat template, trained locally on the task's own text.

What a Qwen-style instruct checkpoint ships, built here from scratch because nothing may be downloaded:
byte-level pre-tokenisation and decoding (every string round-trips, no unknown token), BPE merges learnt
from the given texts with `tokenizers`, the chat markup `<|im_start|>` / `<|im_end|>` as single special
tokens, and a Jinja `chat_template` (ChatML: a system turn, with a default system message when the
conversation has none; user and assistant turns; `add_generation_prompt` opens the assistant turn).
End of turn (`eos_token`) is `<|im_end|>`; padding is `<|endoftext|>`. No BOS token is added.

Training is deterministic: the same texts and vocabulary size give the same merges and the same
tokenizer files, byte for byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # heavy imports stay inside functions
    from transformers import PreTrainedTokenizerBase

END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)
DEFAULT_SYSTEM = "You are a helpful assistant."

# ChatML. Written with whitespace control so the rendered text holds exactly the markup and newlines below.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> "PreTrainedTokenizerBase":
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts`, with `vocab_size` entries at most
    (256 byte symbols and the 3 special tokens included), left padding, and the ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} is below the {len(alphabet)} byte symbols plus "
                         f"{len(SPECIAL_TOKENS)} special tokens; raise base.vocab_size")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=sorted(alphabet), show_progress=False)
    # Sorted, so the order the caller's rows come in cannot change the merges.
    tok.train_from_iterator(sorted(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def set_generation_ids(model, tokenizer: "PreTrainedTokenizerBase") -> None:
    """Make `model.generation_config` stop on end of turn or end of text (in that order) and pad with end of
    text, as an instruct checkpoint's generation_config does."""
    ids = tokenizer.convert_tokens_to_ids([IM_END, END_OF_TEXT])
    model.generation_config.eos_token_id = ids
    model.generation_config.pad_token_id = ids[1]
