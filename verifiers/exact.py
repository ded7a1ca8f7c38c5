"""A generic verifier for user problem files: the final answer must equal the reference.

The answer is taken from, in order: the text after `####`, after `The answer is`, after the last
`;`, or the last non-empty line. Comparison ignores surrounding space, a trailing period, thousands
separators and compares numbers by value. Math-aware equivalence is the `math` verifier's job.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Mapping, Optional

from restem.verifiers.verdict import Verdict

_ANSWER_IS = re.compile(r"answer is[:\s]*(.+)", re.IGNORECASE)


def extract_final(completion: str) -> Optional[str]:
    text = completion.strip()
    if not text:
        return None
    if "####" in text:
        found = text.rsplit("####", 1)[1]
    elif m := list(_ANSWER_IS.finditer(text)):
        found = m[-1].group(1)
    elif ";" in text:
        found = text.rsplit(";", 1)[1]
    else:
        found = text.splitlines()[-1]
    found = found.strip().splitlines()[0].strip() if found.strip() else ""
    return found.rstrip(".").strip() or None


def _number(text: str) -> Optional[Fraction]:
    cleaned = text.replace(",", "").replace("$", "").strip()
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(extracted: str, reference: str) -> bool:
    a, b = _number(extracted), _number(reference)
    if a is not None and b is not None:
        return a == b
    return extracted.strip().rstrip(".") == reference.strip().rstrip(".")


class ExactAnswerVerifier:
    name = "exact"
    version = "1"

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict:
        extracted = extract_final(completion)
        if extracted is None:
            return Verdict("incorrect", 0.0, False, None, None, {"answer": "none found"})
        ok = same_answer(extracted, str(problem["reference"]))
        return Verdict("correct" if ok else "incorrect", float(ok), ok, extracted, None, {})
