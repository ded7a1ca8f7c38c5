"""The embedded task: multi-digit addition with a carry scratchpad, and its verifier.

Format: prompt `4713+2859=`, completion `3+9+0=12,1+5+1=7,7+8+0=15,4+2+1=7;7572`: one step per
digit position, right to left, `a+b+carry_in=sum`, then `;` and the final answer. A missing digit of
the shorter operand is 0. The verifier rewards the final answer (0/1) and separately checks every
step (operand digits, carry chain, sum, step count and that the answer agrees with the steps), so
"right answer, wrong reasoning" is the column `steps_valid = false` among correct rows.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping, Optional

from restem.verifiers.verdict import Verdict

_PROMPT = re.compile(r"^\s*(\d+)\+(\d+)=\s*$")
_STEP = re.compile(r"^(\d)\+(\d)\+(\d)=(\d{1,2})$")


def make_prompt(a: int, b: int) -> str:
    return f"{a}+{b}="


def scratchpad(a: int, b: int) -> str:
    """The gold completion for a+b."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(xs), len(ys))):
        da = int(xs[i]) if i < len(xs) else 0
        db = int(ys[i]) if i < len(ys) else 0
        s = da + db + carry
        steps.append(f"{da}+{db}+{carry}={s}")
        carry = s // 10
    return ",".join(steps) + f";{a + b}"


def random_operand(rng: random.Random, digits: int) -> int:
    """A number with exactly `digits` digits (0-9 for one digit)."""
    if digits == 1:
        return rng.randrange(0, 10)
    return rng.randrange(10 ** (digits - 1), 10**digits)


def parse_prompt(prompt: str) -> Optional[tuple[int, int]]:
    m = _PROMPT.match(prompt)
    return (int(m.group(1)), int(m.group(2))) if m else None


def extract_answer(completion: str) -> Optional[str]:
    """The text after the last `;`, stripped; None when there is no `;` or nothing after it."""
    if ";" not in completion:
        return None
    answer = completion.rsplit(";", 1)[1].strip()
    return answer or None


def check_steps(prompt: str, completion: str) -> tuple[Optional[bool], str]:
    """(every step right, reason). None when the prompt is not an addition prompt."""
    operands = parse_prompt(prompt)
    if operands is None:
        return None, "prompt is not `a+b=`"
    a, b = operands
    if ";" not in completion:
        return False, "no `;` between steps and answer"
    body, answer = completion.rsplit(";", 1)
    xs, ys = str(a)[::-1], str(b)[::-1]
    n = max(len(xs), len(ys))
    steps = body.split(",") if body else []
    if len(steps) != n:
        return False, f"{len(steps)} steps for {n} digit positions"
    carry, digits = 0, []
    for i, step in enumerate(steps):
        m = _STEP.match(step.strip())
        if not m:
            return False, f"step {i + 1} `{step}` is not `a+b+c=s`"
        da, db, dc, s = (int(g) for g in m.groups())
        want_a = int(xs[i]) if i < len(xs) else 0
        want_b = int(ys[i]) if i < len(ys) else 0
        if (da, db) != (want_a, want_b):
            return False, f"step {i + 1} adds {da}+{db}, the operands' digits are {want_a}+{want_b}"
        if dc != carry:
            return False, f"step {i + 1} carries in {dc}, the previous step carries {carry}"
        if s != da + db + dc:
            return False, f"step {i + 1}: {da}+{db}+{dc} is {da + db + dc}, not {s}"
        carry = s // 10
        digits.append(str(s % 10))
    from_steps = (str(carry) if carry else "") + "".join(reversed(digits))
    if answer.strip() != from_steps:
        return False, f"answer {answer.strip()!r} does not follow from the steps ({from_steps})"
    return True, "ok"


def _same_number(extracted: str, reference: str) -> bool:
    if extracted.isdigit() and reference.strip().isdigit():
        return int(extracted) == int(reference.strip())
    return extracted == reference.strip()


def consistent(prompt: str, completion: str) -> bool:
    """A label-free check (for majority-vote filters): one well-formed step per digit position, each
    adding the prompt's digits at that position. The sums and the answer are not checked."""
    operands = parse_prompt(prompt)
    if operands is None or ";" not in completion:
        return False
    xs, ys = str(operands[0])[::-1], str(operands[1])[::-1]
    steps = completion.rsplit(";", 1)[0].split(",")
    if len(steps) != max(len(xs), len(ys)):
        return False
    for i, step in enumerate(steps):
        m = _STEP.match(step.strip())
        if not m or (int(m.group(1)), int(m.group(2))) != (int(xs[i]) if i < len(xs) else 0,
                                                          int(ys[i]) if i < len(ys) else 0):
            return False
    return True


class AdditionVerifier:
    """0/1 reward on the final answer; `steps_valid` from the step checker."""

    name = "arithmetic"
    version = "1"

    def consistent(self, completion: str, problem: Mapping[str, Any]) -> bool:
        return consistent(str(problem["prompt"]), completion)

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict:
        reference = str(problem["reference"])
        extracted = extract_answer(completion)
        steps_valid, why = check_steps(str(problem["prompt"]), completion)
        details = {"steps": why}
        if extracted is None:
            return Verdict("incorrect", 0.0, False, None, steps_valid, {**details, "answer": "none found"})
        ok = _same_number(extracted, reference)
        return Verdict("correct" if ok else "incorrect", 1.0 if ok else 0.0, ok, extracted, steps_valid, details)
