"""Equivalence of math answers (GSM8K, MATH) and the `math` / `gsm8k` verifiers.

Extraction is `restem.verifiers.math_extract` (our markers, then math-verify's configs; `strict` or `lenient`).
`clean_answer` removes what does not change a value: delimiters, currency, units, percent signs and
words, thousands separators (`1,000`, `1 000`, `10,\\!000`, `14{,}916`; `32, 349` stays a list).

A final answer must be one value (`one_value`): `#### 20=5`, `The answer is 3 = 5`, `#### 5>>5` are
not answers to compare by their last token. Accepted: a value, or a name given a value (`x = 5`,
`k \\approx 11`, `(p,q,r) = (6,31,-1)`, `x \\in [0,1)`); a list only where the reference is a list;
any relation where the reference is itself an equation or inequality.

Equivalence (`answers_equivalent`) is math-verify's (`parse` + `verify`) with our guards in front of it,
each for a case where math-verify is known to be wrong or too lenient:

- both sides exact numbers (integers, decimals, fractions, or sympy rationals such as `1/2004!`):
  exact comparison decides (math-verify compares them after rounding, so `1/2004!` equals `1/2006!`);
  a decimal of 15 or more significant digits is a machine float and stands for the value it rounds
  (`0.0833333333333333` is 1/12, `0.3333333333` is not 1/3);
- brackets: `(a,b)`, `[a,b)` etc. are compared element by element, in order, and the brackets must
  match (ordered pairs stay ordered, open and closed interval ends differ); `\\{a,b\\}` is unordered;
- `\\pm x` is never `x`; a decimal is never an irrational constant (`3.14` is not `\\pi`).

Plain-text math (`pi/2`, `sqrt(2)`, `-1+exp(16)`) is read with sympy from a whitelisted alphabet;
a decimal comma is read as such only where the other side is one number (`1,22` against `1.22`).
math-verify's own signal-based timeouts are switched off (`parsing_timeout=None`, `timeout_seconds=None`):
they fail outside the main thread. Hard timeouts are the pool's job (`restem.verifiers.pool`).
"""

from __future__ import annotations

import logging
import math
import re
from functools import lru_cache
from importlib.metadata import version as _dist_version
from typing import Any, Mapping, Optional

from restem.verifiers.verdict import Verdict
from restem.verifiers.math_extract import DEFAULT_EXTRACTION, check_mode, extract_answer, reference_answer
from restem.verifiers.math_text import (DECIMAL, DECIMAL_COMMA, IRRATIONAL, PLAIN_MATH, PLAIN_NAMES, PM, WORD_ANSWER,
                                 clean_answer, exact_number, one_value, structure)

# math-verify logs a warning when its timeout is off; we disable it on purpose (see header).
logging.getLogger("math_verify").setLevel(logging.ERROR)

MATH_VERIFY_VERSION = _dist_version("math-verify")

# ---------------------------------------------------------------------------------------- equivalence


@lru_cache(maxsize=65_536)
def _mv_parse(text: str) -> tuple:
    """math-verify's parse of an answer text, as a tuple (cached: references repeat across samples);
    plain-text math (`pi/2`, `-1+exp(16)`) through sympy first."""
    from math_verify import parse

    plain = _plain_math(text)
    if plain is not None:
        return (plain, text)
    return tuple(parse(f"${text}$", parsing_timeout=None))


def _plain_math(text: str) -> Optional[Any]:
    """A sympy value for plain-text math written without LaTeX, or None. Only whitelisted names and
    characters reach sympy's parser (it evaluates Python)."""
    if "\\" in text or not PLAIN_MATH.match(text):
        return None
    names = set(re.findall(r"[A-Za-z]+", text))
    if not names or not names <= PLAIN_NAMES | {n for n in names if len(n) == 1}:
        return None
    if not names & (PLAIN_NAMES - {"e", "E", "I"}) and "**" not in text:
        return None  # `2x+1` and the like: math-verify's LaTeX reading is the same and keeps its guards
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    local = {"pi": sympy.pi, "e": sympy.E, "E": sympy.E, "exp": sympy.exp, "sqrt": sympy.sqrt, "ln": sympy.log,
             "log": sympy.log, "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "I": sympy.I,
             "oo": sympy.oo, "inf": sympy.oo}
    try:
        return parse_expr(text, local_dict=local,
                          transformations=standard_transformations + (implicit_multiplication_application, convert_xor))
    except Exception:  # noqa: BLE001 - not plain math after all: math-verify reads it
        return None


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
        IRRATIONAL.search(text)
    )


def _machine_float_of(decimal_text: str, value: Any) -> bool:
    """Whether `decimal_text` has 15+ significant digits and rounds `value` in its last digit: a
    double printed in full stands for the value it was computed from (`0.0833333333333333` = 1/12)."""
    digits = re.sub(r"\D", "", decimal_text.split("e")[0]).lstrip("0")
    if len(digits) < 15 or "." not in decimal_text or not DECIMAL.match(decimal_text.replace(" ", "")):
        return False
    try:
        import sympy

        exact = sympy.N(value, 40)
        x = sympy.Float(decimal_text.replace(" ", ""), 40)
        if x == 0:
            return False
        last_digit = 10 ** (math.floor(math.log10(abs(float(x)))) - len(digits) + 1)
        return bool(abs(x - exact) <= last_digit)
    except Exception:  # noqa: BLE001 - not a number sympy can evaluate
        return False


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


def _decimal_comma(gold: str, pred: str) -> Optional[tuple[str, str]]:
    """Both texts with a decimal comma read as a point, where one side is `1,22` and the other one number."""
    for a, b in ((gold, pred), (pred, gold)):
        if DECIMAL_COMMA.match(a) and exact_number(b) is not None:
            fixed = a.replace(",", ".")
            return (fixed, b) if a is gold else (b, fixed)
    return None


def _equivalent(gold: str, pred: str) -> tuple[Optional[bool], str]:
    """(equal?, method) for cleaned answer texts; None when the gold cannot be understood at all."""
    if gold == pred or gold.replace(" ", "") == pred.replace(" ", ""):
        return True, "same text"
    if bool(PM.search(gold)) != bool(PM.search(pred)):
        return False, "guard: \\pm on one side only"
    sg, sp = structure(gold), structure(pred)
    if sg is not None and sp is not None:
        return _compare_structures(sg, sp)
    fixed = _decimal_comma(gold, pred)
    if fixed is not None:
        gold, pred = fixed
    eg, ep = exact_number(gold), exact_number(pred)
    if eg is not None and ep is not None:
        if eg != ep and (_machine_float_of(gold, ep) or _machine_float_of(pred, eg)):
            return True, "machine float of the exact value"
        return eg == ep, "exact numbers"
    return _math_verify_with_guards(gold, pred)


def _math_verify_with_guards(gold: str, pred: str) -> tuple[Optional[bool], str]:
    from math_verify import verify

    parsed_gold, parsed_pred = _mv_parse(gold), _mv_parse(pred)
    if not any(not isinstance(x, str) for x in parsed_gold):
        # math-verify falls back to the raw string; only short word answers ("(A)", "east") are safe
        # to compare as text, anything else we cannot read and must not call incorrect.
        if WORD_ANSWER.match(gold):
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
    if (_is_float(vg) and _is_irrational_constant(vp, pred)) or (_is_float(vp) and _is_irrational_constant(vg, gold)):
        if _machine_float_of(gold, vp) or _machine_float_of(pred, vg):
            return True, "machine float of the exact value"
        if ok:
            return False, "guard: decimal vs irrational constant"
    return bool(ok), "math-verify"


def answers_equivalent(gold: str, pred: str) -> tuple[Optional[bool], str]:
    """(is `pred` the same answer as `gold`?, method). None when the gold answer cannot be read."""
    return _equivalent(clean_answer(gold), clean_answer(pred))


# ------------------------------------------------------------------------------------------ verifiers


def grade(completion: str, reference: str, extraction: str = DEFAULT_EXTRACTION) -> Verdict:
    """The verdict for one completion against a reference answer (or full reference solution).
    `extraction`: strict (a committed final answer is required) or lenient (see `restem.verifiers.math_extract`);
    it is recorded in `details` with how the answer was found and compared."""
    gold = reference_answer(str(reference))
    raw, how = extract_answer(completion, extraction)
    details = {"extraction": extraction, "found_by": how, "gold": gold}
    if raw is None:
        return Verdict("incorrect", 0.0, False, None, None, {**details, "reason": "no final answer found"})
    clean_gold, pred = clean_answer(gold), clean_answer(raw)
    if how != "fallback":  # what the model committed to must be one value; the fallback reads one already
        pred, why = one_value(pred, clean_gold)
        if why is not None:
            return Verdict("incorrect", 0.0, False, pred, None,
                           {**details, "reason": f"final answer is not one value: {why}"})
    ok, method = _equivalent(clean_gold, pred)
    details["method"] = method
    if ok is None:
        return Verdict("unverifiable", 0.0, None, pred, None, details)
    return Verdict("correct" if ok else "incorrect", 1.0 if ok else 0.0, ok, pred, None, details)


def with_step_check(verdict: Verdict, completion: str) -> Verdict:
    """The verdict with `steps_valid` from the calculation checker (None when no step is checkable),
    so "right answer, wrong reasoning" is a column for math as for the arithmetic task."""
    import dataclasses

    from restem.verifiers.steps import steps_valid

    return dataclasses.replace(verdict, steps_valid=steps_valid(completion))


class MathVerifier:
    """MATH-style answers: final-answer statements and boxes, then (lenient) math-verify's extraction;
    LaTeX equivalence via math-verify plus our guards. `extraction`: strict | lenient."""

    name = "math"
    version = f"3+math-verify-{MATH_VERIFY_VERSION}"

    def __init__(self, extraction: str = DEFAULT_EXTRACTION):
        self.extraction = check_mode(extraction)

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict:
        return with_step_check(grade(completion, str(problem["reference"]), self.extraction), completion)


class GSM8KVerifier(MathVerifier):
    """GSM8K answers (`#### 18`, `A: 18`, `\\boxed{18}`, "The answer is 18"): numbers compare exactly."""

    name = "gsm8k"
