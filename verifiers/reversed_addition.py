"""Addition in reversed digit order with index-hint tags (the easy-to-hard format of Lee et al. 2025).

Prompt: both operands zero-padded to the same length n and read least-significant digit first; for
digit position i the prompt holds `<digit of a><digit of b><tag i>`, then `=`. Tags are consecutive
letters of the cyclic alphabet a..z starting at a per-problem offset (0..25), so position i has
tag `letters[(offset + i) % 26]`. Completion: one step per position, `<tag i><sum digit><carry out>`.
The sum is read from the steps: the carry out of the last step is the top digit, followed by the
sum digits from last to first (a leading zero of the padded sum is dropped).

Example from issue 6: 4713+59 -> prompt `39b15c70d40e=` (offset 1), completion `b21c70d70e40`,
answer 4772. A completion is *consistent* when its step tags are the prompt's tags, in order, one
step per position; that needs no answer. The step checker checks every sum digit and carry against
the prompt's digits and the previous carry.
"""

from __future__ import annotations

import re
import string
from typing import Any, Mapping, Optional

from restem.verifiers.verdict import Verdict

LETTERS = string.ascii_lowercase
_PROMPT = re.compile(r"^((?:\d\d[a-z])+)=$")
_STEPS = re.compile(r"^(?:[a-z]\d[01])+$")


def tag(offset: int, i: int) -> str:
    return LETTERS[(offset + i) % 26]


def _padded_reversed(a: int, b: int) -> tuple[str, str]:
    if a < 0 or b < 0:
        raise ValueError(f"operands must be non-negative, got {a} and {b}")
    n = max(len(str(a)), len(str(b)))
    return str(a).zfill(n)[::-1], str(b).zfill(n)[::-1]


def make_prompt(a: int, b: int, offset: int) -> str:
    """`4713+59`, offset 1 -> `39b15c70d40e=`."""
    if not 0 <= offset < 26:
        raise ValueError(f"offset must be in 0..25, got {offset}")
    xs, ys = _padded_reversed(a, b)
    return "".join(f"{x}{y}{tag(offset, i)}" for i, (x, y) in enumerate(zip(xs, ys))) + "="


def make_solution(a: int, b: int, offset: int) -> str:
    """The gold completion: `<tag><sum digit><carry out>` per position, least significant first."""
    if not 0 <= offset < 26:
        raise ValueError(f"offset must be in 0..25, got {offset}")
    xs, ys = _padded_reversed(a, b)
    out, carry = [], 0
    for i, (x, y) in enumerate(zip(xs, ys)):
        s = int(x) + int(y) + carry
        carry = s // 10
        out.append(f"{tag(offset, i)}{s % 10}{carry}")
    return "".join(out)


def parse_prompt(prompt: str) -> Optional[list[tuple[int, int, str]]]:
    """[(digit of a, digit of b, tag), ...] least significant first; None when not this format."""
    m = _PROMPT.match(prompt.strip())
    if not m:
        return None
    body = m.group(1)
    return [(int(body[j]), int(body[j + 1]), body[j + 2]) for j in range(0, len(body), 3)]


def parse_steps(completion: str) -> Optional[list[tuple[str, int, int]]]:
    """[(tag, sum digit, carry), ...]; None unless the whole completion is a run of steps."""
    text = completion.strip()
    if not _STEPS.match(text):
        return None
    return [(text[j], int(text[j + 1]), int(text[j + 2])) for j in range(0, len(text), 3)]


def extract_answer(completion: str) -> Optional[int]:
    """The sum the steps spell out (final carry, then sum digits most significant first), or None."""
    steps = parse_steps(completion)
    if not steps:
        return None
    digits = "".join(str(d) for _, d, _ in reversed(steps))
    return int(str(steps[-1][2]) + digits)


def consistent(prompt: str, completion: str) -> bool:
    """The completion is well formed and its step tags equal the prompt's tags, in order, one per digit."""
    positions, steps = parse_prompt(prompt), parse_steps(completion)
    if positions is None or steps is None or len(positions) != len(steps):
        return False
    return all(p[2] == s[0] for p, s in zip(positions, steps))


def check_steps(prompt: str, completion: str) -> tuple[Optional[bool], str]:
    """(every step right, reason); None when the prompt is not in this format."""
    positions = parse_prompt(prompt)
    if positions is None:
        return None, "prompt is not `<digit><digit><tag>...=`"
    steps = parse_steps(completion)
    if steps is None:
        return False, "completion is not a run of `<tag><digit><carry>` steps"
    if len(steps) != len(positions):
        return False, f"{len(steps)} steps for {len(positions)} digit positions"
    carry = 0
    for i, ((x, y, want_tag), (got_tag, digit, carry_out)) in enumerate(zip(positions, steps)):
        if got_tag != want_tag:
            return False, f"step {i + 1} has tag {got_tag!r}, the prompt's tag is {want_tag!r}"
        s = x + y + carry
        if digit != s % 10:
            return False, f"step {i + 1}: {x}+{y}+{carry} ends in {s % 10}, not {digit}"
        if carry_out != s // 10:
            return False, f"step {i + 1}: {x}+{y}+{carry} carries {s // 10}, not {carry_out}"
        carry = carry_out
    return True, "ok"


class ReversedAdditionVerifier:
    """0/1 reward on the sum the steps spell out; `steps_valid` from the step checker."""

    name = "reversed_addition"
    version = "1"

    def consistent(self, completion: str, problem: Mapping[str, Any]) -> bool:
        """The ability CONSISTENCY (verifiers/base.py): the module's label-free `consistent` check."""
        return consistent(str(problem["prompt"]), completion)

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict:
        reference = str(problem["reference"]).strip()
        prompt = str(problem["prompt"])
        steps_valid, why = check_steps(prompt, completion)
        details = {"steps": why, "consistent": consistent(prompt, completion)}
        value = extract_answer(completion)
        if value is None:
            return Verdict("incorrect", 0.0, False, None, steps_valid, {**details, "answer": "none found"})
        ok = reference.isdigit() and value == int(reference)
        return Verdict("correct" if ok else "incorrect", 1.0 if ok else 0.0, ok, str(value), steps_valid, details)
