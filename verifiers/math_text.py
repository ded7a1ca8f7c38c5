"""Normalisation of math answer texts: what `restem.verifiers.math_answer` compares, and whether it is one answer.

`clean_answer` removes what does not change a value: delimiters, currency, units, percent signs and
words, thousands separators (`1,000`, `1 000`, `10,\\!000`, `14{,}916`; `32, 349` stays a list).
`one_value` decides whether a final answer states one value (see its docstring); `exact_number` and
`structure` give the exact readings the guards of `restem.verifiers.math_answer` use.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from typing import Optional

_PLAIN_NUMBER = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*$")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(,\d{3})+(\.\d+)?$")
_SPACE_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}( \d{3})+(\.\d+)?$")
DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_SLASH = re.compile(r"^([+-]?\d+)\s*/\s*(\d+)$")
_LATEX_FRAC = re.compile(r"^([+-]?)\\[dtc]?frac\{\s*([+-]?\d+)\s*\}\{\s*(\d+)\s*\}$")
_SHORT_FRAC = re.compile(r"^([+-]?)\\[dtc]?frac(\d)(\d)$")
_TEXT = re.compile(r"\\(?:text|textbf|textit|textnormal|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_UNIT_WORDS = re.compile(
    r"\s*(?:dollars?|cents?|usd|euros?|pounds?|percent(?:age)?|pct|units?|degrees?|cm|mm|km|m|kg|g|mph|hours?|"
    r"minutes?|seconds?|days?|weeks?|years?|feet|foot|ft|inches|inch|miles?|meters?|square|sq|cubic)\.?$",
    re.IGNORECASE,
)
_NUMBER_THEN_WORDS = re.compile(r"^([+-]?\$?\s*[\d.,]*\d)\s+[A-Za-z][A-Za-z\s.'-]*$")
IRRATIONAL = re.compile(r"\\pi|π|\\sqrt|\\ln|\\log|\be\^|\\exp|\bpi\b|\bsqrt\b|\bexp\b|\bln\b")
WORD_ANSWER = re.compile(r"^[\w()\s.'-]{1,40}$")
PM = re.compile(r"\\pm|\\mp|±|∓")
_OPTION = re.compile(r"^\(([A-Za-z])\)$")
# Top-level relation signs (`\le` but not `\left`, `\in` but not `\infty`).
_RELATION = re.compile(r"<=|>=|!=|==|=|<|>|≤|≥|≠|≈|\\(?:leq|geq|neq|le|ge|ne|lt|gt|approx|in|sim)(?![A-Za-z])")
_ASSIGNING = ("=", "==", "\\approx", "≈", "\\in")
_LIST_WORD = re.compile(r"\s(?:and|or)\s|;")
_TWO_NUMBERS = re.compile(r"\d\.?\s+[-+]?\.?\d")
PLAIN_MATH = re.compile(r"^[0-9A-Za-z+\-*/^(). ]+$")
PLAIN_NAMES = {"pi", "e", "E", "exp", "sqrt", "ln", "log", "sin", "cos", "tan", "I", "oo", "inf"}


# -------------------------------------------------------------------------------------- normalisation


def _strip_delimiters(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
    return text


@lru_cache(maxsize=65_536)
def clean_answer(text: str) -> str:
    """Remove what does not change an answer's value: delimiters, currency, `%`, units, commas in numbers."""
    if _PLAIN_NUMBER.match(text):
        return text.strip()
    text = _strip_delimiters(re.sub(r"^(?:\\?[\"'])+|(?:\\?[\"'])+$", "", text.strip()))
    text = text.rstrip(".").strip()
    text = re.sub(r"(?<!\\)\\\\(?=[A-Za-z])", r"\\", text)  # `\\frac` written with an escaped backslash
    text = re.sub(r",\\!\s*", ",", text).replace("{,}", ",").replace("{, }", ",")  # 10,\!000 and 14{,}916
    text = _TEXT.sub(lambda m: m.group(1), text)
    text = re.sub(r"(?<!\\)\\ ", " ", text.replace("\\!", "").replace("\\,", ""))  # `\ ` but not a row break `\\ `
    text = text.replace("\\left", "").replace("\\right", "")
    text = re.sub(r"\^\s*\{?\\circ\}?", "", text)
    text = text.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    text = re.sub(r"^(?:USD|US\$|€|£|¥|Rs\.?)\s*", "", text).strip()
    text = re.sub(r"\s*(?:[€£¥₹]|(?:c|k)?m(?:²|\^2|\^\{2\}))$", "", text).strip()
    text = _UNIT_WORDS.sub("", text).strip()
    m = _NUMBER_THEN_WORDS.match(text)
    if m and not re.search(r"\b(?:and|or|to|plus|minus|times)\b", text, re.IGNORECASE):  # "18 eggs per day" -> "18"
        text = m.group(1).replace("$", "").strip()
    if _THOUSANDS.match(text.replace(" ", "")) and ", " not in text:
        text = text.replace(",", "").replace(" ", "")
    elif _SPACE_THOUSANDS.match(text):
        text = text.replace(" ", "")
    m = _OPTION.match(text.strip())
    if m:  # `(C)` is option C
        text = m.group(1)
    return text.rstrip(".").strip()


def _top_level(text: str, pattern: re.Pattern) -> list[tuple[int, int, str]]:
    """(start, end, match) of `pattern` outside (), [], {}."""
    depth, out, i = 0, [], 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            m = pattern.match(text, i)
            if m and m.end() > i:
                out.append((i, m.end(), m.group(0)))
                i = m.end()
                continue
        i += 1
    return out


def _is_name(text: str) -> bool:
    """A variable, function value or tuple of names: `x`, `P(A)`, `f(2)`, `(p,q,r)`, `a_1`, `\\theta`."""
    t = re.sub(r"_\{[^{}]*\}|_\w|\^\{[^{}]*\}", "", text.strip())
    t = re.sub(r"\\[A-Za-z]+", "a", t)
    t = re.sub(r"(?<=[A-Za-z])\([^()]*\)", "", t)
    return bool(re.fullmatch(r"\(?[A-Za-z][A-Za-z\s,']*\)?", t))


def several_values(text: str) -> bool:
    """Whether a (cleaned) answer is a list, tuple, set, interval or `\\pm` pair rather than one value."""
    if PM.search(text) or "\\cup" in text or "\\{" in text or "\\begin" in text or _top_level(text, _LIST_WORD):
        return True
    if structure(text) is not None:
        return True
    return bool(_top_level(text, re.compile(","))) and not DECIMAL_COMMA.match(text)


def one_value(pred: str, gold: str) -> tuple[str, Optional[str]]:
    """(the value `pred` states, None) or (pred, why it is not one answer), both texts cleaned.

    A name given a value (`x = 5`) states the value; any other relation (`20=5`, `3 = 5`), calculator
    markup (`5>>5`, `5<<5`) or a second value where the reference has one (`3 and 4`) is not an answer.
    Where the reference is itself a relation, relations are compared as they are."""
    if _PLAIN_NUMBER.match(pred):
        return pred, None
    if "<<" in pred or ">>" in pred:
        return pred, "calculator markup `<<`/`>>` in the answer"
    if _top_level(gold, _RELATION):
        return pred, None
    rel = _top_level(pred, _RELATION)
    if rel:
        first = rel[0]
        value_end = rel[1][0] if len(rel) == 2 and rel[1][2] in ("\\approx", "≈") else len(pred)
        if first[2] in _ASSIGNING and len(rel) <= 2 and (len(rel) == 1 or value_end < len(pred)) \
                and _is_name(pred[: first[0]]):
            pred = pred[first[1] : value_end].strip()  # `x = 1/3 \approx 0.33` states 1/3
        else:
            return pred, "an equation or relation, not one value"
        if not pred:
            return pred, "nothing after the relation"
    if not several_values(gold):
        if several_values(pred):
            return pred, "a second value where the reference has one"
        if _TWO_NUMBERS.search(pred) and not re.search(r"[\\{}^]", pred):
            return pred, "a second number where the reference has one"
    return pred, None


def exact_number(text: str) -> Optional[Fraction]:
    """The exact value of a plain number (`18`, `-0.5`, `3/4`, `\\frac{3}{4}`), None for anything else."""
    t = text.replace(" ", "")
    if DECIMAL.match(t):
        return Fraction(t)
    m = _SLASH.match(t)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    m = _LATEX_FRAC.match(t) or _SHORT_FRAC.match(t)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) == "-" else value
    return None


def split_top_level(body: str) -> list[str]:
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


def structure(text: str) -> Optional[tuple[str, list[str]]]:
    """(kind, elements) for `\\{a,b\\}` (kind "set") or `(a,b)`/`[a,b)`/... (kind = the two brackets)."""
    t = text.strip()
    if t.startswith("\\{") and t.endswith("\\}"):
        return "set", split_top_level(t[2:-2])
    if len(t) >= 2 and t[0] in "([" and t[-1] in ")]":
        inner = t[1:-1]
        parts = split_top_level(inner)
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
