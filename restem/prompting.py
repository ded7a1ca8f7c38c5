"""Prompts and token ids: the one place that turns a problem's raw question into what the policy sees, and a
(prompt, completion) pair into the token ids a model trains on.

Grow, Evaluate, the voters, the reward model's data (all through restem/sampling/sampler.py), base training
(restem/training/tiny.py) and Improve (restem/training/sft.py) call these functions, so a kept sample trains
on exactly the tokens it was sampled from:
- `render(tokenizer, spec, question)`: the text the policy is given (`spec` is params `prompt`).
  plain: `spec.template` with `{prompt}` filled in (none: the question as is), few-shot examples before it;
  chat: the tokenizer's own chat template over [system] + few-shot user/assistant turns + the question,
  with the generation prompt (the assistant turn's header) at the end.
- `prompt_ids(tokenizer, spec, rendered)`: its token ids. plain: `tokenizer(text)` (the tokenizer adds its
  BOS, as restem always did); chat: the rendered text already holds the template's special tokens, so
  none are added again.
- `end_of_turn_ids(tokenizer, model)`: the ids generation stops on: the tokenizer's EOS and every id of
  the model's `generation_config.eos_token_id` (instruct models list their end-of-turn token there).
- `training_ids(tokenizer, spec, rendered, completion_ids, completion_text)`: prompt ids + the sampled
  completion ids exactly; a row without sampled ids (a demonstration, an imported sample) is tokenised
  from its text and ends with the tokenizer's EOS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.params import PromptParams

FEWSHOT_SEPARATOR = "\n\n"  # plain style: between few-shot examples, and between the last one and the question
_FEWSHOT_CACHE: dict[tuple, list[tuple[str, str]]] = {}


def check_format_template(template: Optional[str], field: str = "template") -> None:
    """A plain prompt template must be a Python format string with a `{prompt}` field; a Jinja chat template
    is refused with a pointer to `prompt.style: chat`, which uses the tokenizer's own."""
    if not template:
        return
    if "{%" in template or "{{-" in template or "-}}" in template:  # Jinja's statement and trim markers
        raise RestemError(
            f"{field} {template!r} looks like a Jinja chat template; restem formats chat prompts with the "
            "tokenizer's own chat template: set `prompt.style: chat` in params.yaml (optionally `prompt.system`) "
            "and give --template/prompt.template only as a Python format string such as 'Q: {prompt}\\nA:'")
    if "{prompt}" not in template:
        raise RestemError(f"{field} {template!r} has no `{{prompt}}` field; add one where the problem goes")
    try:
        template.format(prompt="")
    except (KeyError, IndexError, ValueError) as exc:
        raise RestemError(f"{field} {template!r} is not a valid format string ({exc}); "
                          "write literal braces as {{ and }}") from None


def apply_template(template: Optional[str], prompt: str, field: str = "template") -> str:
    """`template` with `{prompt}` filled in, or the prompt itself when there is no template."""
    if not template:
        return prompt
    check_format_template(template, field)
    return template.format(prompt=prompt)


def fewshot_examples(spec: PromptParams, root: Path = Path(".")) -> list[tuple[str, str]]:
    """The (prompt, completion) pairs of `spec.fewshot` (a JSONL file in inputs/prompt/), in file order."""
    if not spec.fewshot:
        return []
    from restem.workspace import user_input

    path = user_input(spec.fewshot, "prompt", "prompt.fewshot", root)
    if not path.is_file():
        raise RestemError(f"params: prompt.fewshot is {spec.fewshot!r}, but {path} is not a file; put a JSONL file "
                          "of {\"prompt\": ..., \"completion\": ...} lines there")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _FEWSHOT_CACHE:
        examples = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RestemError(f"{path}: line {number}: not valid JSON ({exc})") from None
            if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("prompt", "completion")):
                raise RestemError(f"{path}: line {number}: needs string fields `prompt` and `completion`")
            examples.append((record["prompt"], record["completion"]))
        if not examples:
            raise RestemError(f"{path}: no few-shot examples; add lines or set prompt.fewshot: null")
        _FEWSHOT_CACHE[key] = examples
    return _FEWSHOT_CACHE[key]


def _chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise RestemError(f"prompt.style is `chat` but the tokenizer of {name} has no chat template; set "
                          "prompt.style: plain (optionally prompt.template) or use a model whose tokenizer has one")


def render(tokenizer, spec: PromptParams, question: str, root: Path = Path(".")) -> str:
    """The text the policy is given for `question` (a problem's raw prompt)."""
    examples = fewshot_examples(spec, root)
    if spec.style == "plain":
        shots = "".join(apply_template(spec.template, p, "prompt.template") + c + FEWSHOT_SEPARATOR
                        for p, c in examples)
        return shots + apply_template(spec.template, question, "prompt.template")
    _chat_template(tokenizer)
    messages: list[dict[str, str]] = [{"role": "system", "content": spec.system}] if spec.system is not None else []
    for p, c in examples:
        messages += [{"role": "user", "content": apply_template(spec.template, p, "prompt.template")},
                     {"role": "assistant", "content": c}]
    messages.append({"role": "user", "content": apply_template(spec.template, question, "prompt.template")})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_ids(tokenizer, spec: PromptParams, rendered: str) -> list[int]:
    """The token ids of a rendered prompt: plain adds the tokenizer's special tokens (its BOS); chat adds none,
    the chat template having written them into the text."""
    return list(tokenizer(rendered, add_special_tokens=spec.style == "plain")["input_ids"])


def end_of_turn_ids(tokenizer, model: Any = None) -> list[int]:
    """The ids that end a completion: the tokenizer's EOS, then those of `model`'s generation config (a model,
    a `GenerationConfig`, or None), in that order, without repeats."""
    config = getattr(model, "generation_config", model)
    listed = getattr(config, "eos_token_id", None) if config is not None else None
    if isinstance(listed, int):
        listed = [listed]
    ids: list[int] = []
    for i in [tokenizer.eos_token_id, *(listed or [])]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    return ids


def training_ids(tokenizer, spec: PromptParams, rendered: str, completion_ids: Optional[Sequence[int]],
                 completion_text: str) -> tuple[list[int], int]:
    """(ids, n_prompt) of one training row: the rendered prompt's ids, then the sampled completion ids exactly as
    the policy produced them (its end-of-turn token included when it ended on one); without sampled ids, the
    completion text's tokens and the tokenizer's EOS. The first n_prompt ids carry no loss."""
    p_ids = prompt_ids(tokenizer, spec, rendered)
    if completion_ids is None:
        c_ids = list(tokenizer(completion_text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    else:
        c_ids = [int(i) for i in completion_ids]
    return p_ids + c_ids, len(p_ids)


def prompt_key(spec: PromptParams, root: Path = Path(".")) -> list:
    """What rendered prompts depend on besides the tokenizer, for resume and memo keys: nothing for the default
    spec (so keys of default runs stay as they were), else the spec and the few-shot file's content."""
    if spec == PromptParams():
        return []
    from restem.schemas.hashing import content_hash

    return [spec.model_dump(), content_hash(fewshot_examples(spec, root))]
