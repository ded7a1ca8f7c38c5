"""Exact arithmetic for the step checker (`restem.verifiers.steps`): plain-text runs such as `$1,800 - 12%`
evaluated with fractions, and two runs compared with the checker's leniency.

Nothing is ever passed to `eval`: expressions are parsed with `ast` and only numbers, + - * / **, unary
signs and parentheses are accepted; powers are bounded so a hostile text cannot ask for 9**9**9, and any
other input reads as None (unchecked, never wrong).

Leniency (see `compare`): a displayed number with d decimals matches a value within 10**-d (rounding,
floor or ceiling); `%` is read both as /100 and as a plain number; `$` and thousands separators are
dropped; an `x` or `×` between numbers is multiplication; a negative difference may be written as its
magnitude ("$1800 - $2000 = $200").
"""

from __future__ import annotations

import ast
import math
import re
from fractions import Fraction
from typing import Callable, Optional

MAX_EXPONENT = 64
MAX_DIGITS = 200  # numbers beyond this are not arithmetic a solution would do by hand

THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def literal(value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    # repr of a float is the shortest text that round-trips: 0.1 -> Fraction(1, 10), not 0.1000000000000000055
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
        raise ValueError("only small integer powers are checked")
    if base == 0 and exponent < 0:
        raise ZeroDivisionError
    return base ** int(exponent)


BINARY: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: _power,
}


def _fraction(node: ast.AST) -> Fraction:
    """Evaluate an `ast` node made only of numbers and + - * / ** with exact fractions."""
    if isinstance(node, ast.Expression):
        return _fraction(node.body)
    if isinstance(node, ast.Constant):
        return literal(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _fraction(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        result = BINARY[type(node.op)](_fraction(node.left), _fraction(node.right))
        if len(str(result.numerator)) > MAX_DIGITS or len(str(result.denominator)) > MAX_DIGITS:
            raise ValueError("number too large")
        return result
    raise ValueError(f"{type(node).__name__} is not arithmetic")


def safe_eval(expr: str) -> Optional[Fraction]:
    """The exact value of a Python-syntax arithmetic expression, or None if it is anything else."""
    if len(expr) > 500:
        return None
    try:
        return _fraction(ast.parse(expr.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return None


def _normalise(run: str, percent: str) -> str:
    """Plain-text arithmetic as Python syntax; `percent` is what `%` becomes ('' or '/100')."""
    text = THOUSANDS.sub("", run.replace("$", ""))
    text = text.replace("×", "*").replace("÷", "/").replace("^", "**")
    text = re.sub(r"(?<=[\d).\s])x(?=[\s\d(.$])", "*", text)
    return text.replace("%", percent)


def values(run: str) -> list[Fraction]:
    """The values of an arithmetic run under each reading of `%` (as /100 and as nothing)."""
    if "," in THOUSANDS.sub("", run):  # a comma that is not a thousands separator: a list, not a number
        return []
    readings = ("/100", "") if "%" in run else ("",)
    found = []
    for reading in readings:
        value = safe_eval(_normalise(run, reading))
        if value is not None and value not in found:
            found.append(value)
    return found


def decimal_places(run: str) -> Optional[int]:
    """Decimal places of a run that is a single displayed number (None when it is an expression)."""
    text = THOUSANDS.sub("", run.replace("$", "").replace("%", "")).strip()
    if not re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", text):
        return None
    return len(text.split(".", 1)[1]) if "." in text else 0


def close(computed: Fraction, shown: Fraction, decimals: Optional[int]) -> bool:
    """Equal, or `shown` is `computed` rounded, floored or ceiled to the decimals it displays."""
    if computed == shown:
        return True
    if decimals is None or decimals >= 10:  # 10+ decimals: a calculator's float output, with float noise
        return abs(computed - shown) <= abs(computed) * Fraction(1, 10**9)
    scaled, target = computed * 10**decimals, shown * 10**decimals
    # floor and ceiling of the exact value bracket every rounding of it ("45/10 = 5 buses" is a ceiling)
    return target.denominator == 1 and math.floor(scaled) <= target <= math.ceil(scaled)


def compare(left: str, right: str) -> tuple[Optional[bool], str]:
    """(left == right, why) for two arithmetic runs; None when either side cannot be read."""
    lefts, rights = values(left), values(right)
    if not lefts or not rights:
        return None, "not arithmetic"
    dl, dr = decimal_places(left), decimal_places(right)
    if dl is not None and dr is not None:
        return None, "no arithmetic on either side"
    for a in lefts:
        for b in rights:
            computed, shown, decimals = (a, b, dr) if dr is not None or dl is None else (b, a, dl)
            if close(computed, shown, decimals):
                return True, "ok"
            expr = left if computed is a else right
            # "$1800 - $2000 = $200" (200 less): a negative difference written as its magnitude
            if computed < 0 < shown and _is_difference(expr) and close(-computed, shown, decimals):
                return True, "ok (magnitude of a negative difference)"
    return False, f"{left.strip()} is {_show(lefts[0])}, not {right.strip()}"


def _is_difference(run: str) -> bool:
    """Whether the last operation of an arithmetic run is a subtraction (`1800 - 2000`, `2*3 - 10`)."""
    try:
        node = ast.parse(_normalise(run, "").strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return False
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.6g}"

