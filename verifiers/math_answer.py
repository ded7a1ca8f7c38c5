"""Final-answer extraction and equivalence for math word problems (GSM8K) and competition math (MATH).

Extraction (`extract_answer`) takes, in order: the last `\\boxed{...}` (nested braces kept), the text
after the last `####`, the last line starting `A:`, or the text after the last "the answer is".
`clean_answer` then removes what does not change the value: `$` delimiters, currency signs, thousands
separators, `%`, units and a trailing period.

Equivalence (`answers_equivalent`) is math-verify's (`parse` + `verify`) with our guards in front of it,
each for a case where math-verify is known to be wrong or too lenient:

- both sides exact numbers (integers, decimals, fractions, or sympy rationals such as `1/2004!`):
  exact comparison decides (math-verify compares them after rounding, so `1/2004!` equals `1/2006!`);
- brackets: `(a,b)`, `[a,b)` etc. are compared element by element, in order, and the brackets must
  match (ordered pairs stay ordered, open and closed interval ends differ); `\\{a,b\\}` is unordered;
- `\\pm x` is never `x`; a decimal is never an irrational constant (`3.14` is not `\\pi`).

math-verify's own signal-based timeouts are switched off (`parsing_timeout=None`, `timeout_seconds=None`):
they fail outside the main thread. Hard timeouts are the pool's job (`verifiers.pool`).
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from functools import lru_cache
from importlib.metadata import version as _dist_version
from typing import Any, Mapping, Optional

from verifiers.base import Verdict

# math-verify logs a warning when its timeout is off; we disable it on purpose (see header).
logging.getLogger("math_verify").setLevel(logging.ERROR)

MATH_VERIFY_VERSION = _dist_version("math-verify")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_A_LINE = re.compile(r"^[ \t]*A:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"answer is[:\s]*", re.IGNORECASE)
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_SLASH = re.compile(r"^([+-]?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^([+-]?)\\[dt]?frac\{\s*([+-]?\d+)\s*\}\{\s*(\d+)\s*\}$")
_SHORT_FRAC = re.compile(r"^([+-]?)\\[dt]?frac(\d)(\d)$")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_UNIT_WORDS = re.compile(
    r"\s*(?:dollars?|cents?|usd|euros?|pounds?|percent|units?|degrees?|cm|mm|km|m|kg|g|mph|hours?|"
    r"minutes?|seconds?|days?|weeks?|years?|feet|foot|ft|inches|inch|miles?|meters?|square|sq|cubic)\.?$",
    re.IGNORECASE,
)
_NUMBER_THEN_WORDS = re.compile(r"^([+-]?\$?\s*[\d.,]*\d)\s+[A-Za-z][A-Za-z\s.'-]*$")
_IRRATIONAL = re.compile(r"\\pi|π|\\sqrt|\\ln|\\log|\be\^|\\exp")
_WORD_ANSWER = re.compile(r"^[\w()\s.'-]{1,40}$")
_PM = re.compile(r"\\pm|\\mp|±|∓")


# ----------------------------------------------------------------------------------------- extraction


def _braced(text: str, start: int) -> Optional[str]:
    """The content of the brace group opening at `text[start] == "{"`, or None if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def last_boxed(text: str) -> Optional[str]:
    """The content of the last `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`), None when absent."""
    for m in reversed(list(_BOXED.finditer(text))):
        end = m.end()
        if end < len(text) and text[end] == "{":
            content = _braced(text, end)
            if content is not None:
                return content.strip()
        elif m.group(0).endswith((" ", "\t")):  # `\boxed 5`: one token
            token = re.match(r"[^\s$]+", text[end:])
            if token:
                return token.group(0)
    return None


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0].strip() if stripped else ""


def extract_answer(completion: str) -> tuple[Optional[str], str]:
    """(raw final answer or None, how it was found: boxed | hashes | a_line | answer_is | none)."""
    boxed = last_boxed(completion)
    if boxed:
        return boxed, "boxed"
    if "####" in completion:
        found = _first_line(completion.rsplit("####", 1)[1])
        return (found or None), "hashes"
    a_lines = _A_LINE.findall(completion)
    if a_lines:
        return a_lines[-1], "a_line"
    hits = list(_ANSWER_IS.finditer(completion))
    if hits:
        found = _first_line(completion[hits[-1].end() :])
        boxed_inside = last_boxed(found)
        return (boxed_inside or found or None), "answer_is"
    return None, "none"


# -------------------------------------------------------------------------------------- normalisation


def _strip_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
    return text


def clean_answer(text: str) -> str:
    """Remove what does not change an answer's value: delimiters, currency, `%`, units, commas in numbers."""
    text = _strip_delimiters(text)
    text = text.rstrip(".").strip()
    text = _TEXT.sub(lambda m: m.group(1), text)
    text = text.replace("\\!", "").replace("\\,", "").replace("\\ ", " ").replace("\\left", "").replace("\\right", "")
    text = re.sub(r"\^\s*\{?\\circ\}?", "", text)
    text = text.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    text = re.sub(r"^(?:USD|US\$|€|£|¥|Rs\.?)\s*", "", text).strip()
    text = _UNIT_WORDS.sub("", text).strip()
    m = _NUMBER_THEN_WORDS.match(text)
    if m and not re.search(r"\b(?:and|or|to|plus|minus|times)\b", text, re.IGNORECASE):  # "18 eggs per day" -> "18"
        text = m.group(1).replace("$", "").strip()
    if _THOUSANDS.match(text.replace(" ", "")):
        text = text.replace(",", "").replace(" ", "")
    return text.rstrip(".").strip()


def exact_number(text: str) -> Optional[Fraction]:
    """The exact value of a plain number (`18`, `-0.5`, `3/4`, `\\frac{3}{4}`), None for anything else."""
    t = text.replace(" ", "")
    if _DECIMAL.match(t):
        return Fraction(t)
    m = _SLASH.match(t)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _LATEX_FRAC.match(t) or _SHORT_FRAC.match(t)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) == "-" else value
    return None


def _split_top_level(body: str) -> list[str]:
    """Split at commas that are not inside (), [], {}."""
    parts, depth, current = [], 0, []
    for ch in body:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return parts


def _structure(text: str) -> Optional[tuple[str, list[str]]]:
    """(kind, elements) for `\\{a,b\\}` (kind "set") or `(a,b)`/`[a,b)`/... (kind = the two brackets)."""
    t = text.strip()
    if t.startswith("\\{") and t.endswith("\\}"):
        return "set", _split_top_level(t[2:-2])
    if len(t) >= 2 and t[0] in "([" and t[-1] in ")]":
        inner = t[1:-1]
        parts = _split_top_level(inner)
        if len(parts) >= 2 and _balanced(inner):
            return t[0] + t[-1], parts
    return None


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


# ---------------------------------------------------------------------------------------- equivalence


@lru_cache(maxsize=65_536)
def _mv_parse(text: str) -> tuple:
    """math-verify's parse of an answer text, as a tuple (cached: references repeat across samples)."""
    from math_verify import parse

    return tuple(parse(f"${text}$", parsing_timeout=None))


def _sympy_rational(value: Any) -> Optional[Any]:
    """The value when it is an exact sympy rational (Integer/Rational), else None."""
    try:
        if getattr(value, "is_Rational", False):
            return value
        # Unevaluated exact expressions such as 1/factorial(2004): evaluate them exactly.
        if getattr(value, "is_number", False) and value.is_rational and not value.free_symbols:
            done = value.doit()
            return done if getattr(done, "is_Rational", False) else None
    except Exception:  # noqa: BLE001 - odd sympy objects: treat as not exact
        return None
    return None


def _is_float(value: Any) -> bool:
    return bool(getattr(value, "is_Float", False))


def _is_irrational_constant(value: Any, text: str) -> bool:
    return bool(getattr(value, "is_number", False)) and not getattr(value, "is_Rational", False) and bool(
        _IRRATIONAL.search(text)
    )


def _compare_structures(gold: tuple[str, list[str]], pred: tuple[str, list[str]]) -> tuple[bool, str]:
    kind_g, items_g = gold
    kind_p, items_p = pred
    if kind_g != kind_p:
        return False, f"brackets differ: {kind_g} vs {kind_p}"
    if len(items_g) != len(items_p):
        return False, f"{len(items_g)} vs {len(items_p)} elements"
    if kind_g != "set":  # tuples and intervals: in order
        ok = all(_equivalent(g, p)[0] for g, p in zip(items_g, items_p))
        return ok, "elementwise in order"
    unmatched = list(items_p)
    for g in items_g:
        match = next((p for p in unmatched if _equivalent(g, p)[0]), None)
        if match is None:
            return False, f"set element {g!r} not matched"
        unmatched.remove(match)
    return True, "set elements matched"


def _equivalent(gold: str, pred: str) -> tuple[Optional[bool], str]:
    """(equal?, method) for cleaned answer texts; None when the gold cannot be understood at all."""
    if gold == pred or gold.replace(" ", "") == pred.replace(" ", ""):
        return True, "same text"
    if bool(_PM.search(gold)) != bool(_PM.search(pred)):
        return False, "guard: \\pm on one side only"
    sg, sp = _structure(gold), _structure(pred)
    if sg is not None and sp is not None:
        return _compare_structures(sg, sp)
    eg, ep = exact_number(gold), exact_number(pred)
    if eg is not None and ep is not None:
        return eg == ep, "exact numbers"
    return _math_verify_with_guards(gold, pred)


def _math_verify_with_guards(gold: str, pred: str) -> tuple[Optional[bool], str]:
    from math_verify import verify

    parsed_gold, parsed_pred = _mv_parse(gold), _mv_parse(pred)
    if not any(not isinstance(x, str) for x in parsed_gold):
        # math-verify falls back to the raw string; only short word answers ("(A)", "east") are safe
        # to compare as text, anything else we cannot read and must not call incorrect.
        if _WORD_ANSWER.match(gold):
            return gold.lower() == pred.lower(), "text"
        return None, "gold not parseable"
    if not parsed_pred:
        return False, "prediction not parseable"
    ok = verify(list(parsed_gold), list(parsed_pred), timeout_seconds=None)
    vg, vp = parsed_gold[0], parsed_pred[0]
    rg, rp = _sympy_rational(vg), _sympy_rational(vp)
    if rg is not None and rp is not None:
        # Exact beats rounding: math-verify says 1/2004! == 1/2006! after rounding both to ~0.
        return bool(rg == rp), "exact rationals" if ok == (rg == rp) else "guard: exact rationals"
    if ok and ((_is_float(vg) and _is_irrational_constant(vp, pred)) or (_is_float(vp) and _is_irrational_constant(vg, gold))):
        return False, "guard: decimal vs irrational constant"
    return bool(ok), "math-verify"


def answers_equivalent(gold: str, pred: str) -> tuple[Optional[bool], str]:
    """(is `pred` the same answer as `gold`?, method). None when the gold answer cannot be read."""
    return _equivalent(clean_answer(gold), clean_answer(pred))


def reference_answer(reference: str) -> str:
    """The final answer inside a reference: a full GSM8K/MATH solution or already the bare answer."""
    if "####" in reference or _A_LINE.search(reference) or last_boxed(reference):
        found, _ = extract_answer(reference)
        if found:
            return found
    return reference.strip()


# ------------------------------------------------------------------------------------------ verifiers


def grade(completion: str, reference: str) -> Verdict:
    """The verdict for one completion against a reference answer (or full reference solution)."""
    gold = reference_answer(str(reference))
    raw, how = extract_answer(completion)
    if raw is None:
        return Verdict("incorrect", 0.0, False, None, None, {"reason": "no final answer found", "gold": gold})
    pred = clean_answer(raw)
    ok, method = answers_equivalent(gold, raw)
    details = {"found_by": how, "method": method, "gold": gold}
    if ok is None:
        return Verdict("unverifiable", 0.0, None, pred, None, details)
    return Verdict("correct" if ok else "incorrect", 1.0 if ok else 0.0, ok, pred, None, details)


def with_step_check(verdict: Verdict, completion: str) -> Verdict:
    """The verdict with `steps_valid` from the calculation checker (None when no step is checkable),
    so "right answer, wrong reasoning" is a column for math as for the arithmetic task."""
    import dataclasses

    from verifiers.steps import steps_valid

    return dataclasses.replace(verdict, steps_valid=steps_valid(completion))


class MathVerifier:
    """MATH-style answers: `\\boxed{}` first, LaTeX equivalence via math-verify plus our guards."""

    name = "math"
    version = f"2+math-verify-{MATH_VERIFY_VERSION}"

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict:
        return with_step_check(grade(completion, str(problem["reference"])), completion)


class GSM8KVerifier:
    """GSM8K answers (`#### 18`, `A: 18`, `\\boxed{18}`, "The answer is 18"): numbers compare exactly."""

    name = "gsm8k"
    version = f"2+math-verify-{MATH_VERIFY_VERSION}"

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict:
        return with_step_check(grade(completion, str(problem["reference"])), completion)
