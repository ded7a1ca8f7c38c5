"""The reasoning path of a solution: its sequence of equations (RFT, Yuan et al. 2023). One rule, used by the
filter's `dedup: equations` and by SQL's `reasoning_path(completion)` (and so by `restem audit diversity`).

- Calculator annotations `<<48/2=24>>` (GSM8K style) are the model's own record of its equations: when a
  solution has any annotation with `=`, those annotations are its path.
- Otherwise the text is cut at `,`, `;` and line ends (an arithmetic scratchpad `7+5+0=12,4+1+1=6;62` is one
  equation per step); in each piece, an equation is a run of whitespace-separated math tokens that holds
  an `=`. A math token holds an `=`, or is made of digits, `. $ € £ % ( ) + - * / × ÷ ^` and letters that
  stand alone (`x`, `2x`, `.75X`: variables, not words); a word ends the run. A final `.`, `:`, `!` or
  `?` is sentence punctuation, not part of the equation. "so she has 16 - 3 = 13 eggs." gives `16-3=13`.
- Whitespace is removed from every equation; equations are joined with ` | `.

A solution without any equation has no path to compare: its key is the text itself, so it is a duplicate
only of an identical text. No path can equal such a text: a text with an `=` always has an equation.
"""

from __future__ import annotations

import re
from typing import Iterable

SEPARATOR = " | "
_ANNOTATION = re.compile(r"<<([^<>]*=[^<>]*)>>")
_PIECES = re.compile(r"[,;\n]")
# digits, money, percent, brackets, operators, and single letters (a letter with no letter beside it)
_MATH_TOKEN = re.compile(r"(?:[0-9.$€£%()+\-*/×÷^]|(?<![A-Za-z])[A-Za-z](?![A-Za-z]))+")
_WHITESPACE = re.compile(r"\s+")
_SENTENCE_END = ".:!?"


def _is_math(token: str) -> bool:
    return "=" in token or _MATH_TOKEN.fullmatch(token) is not None


def _piece_equations(piece: str) -> list[str]:
    found, run = [], []
    for token in piece.split() + [""]:  # "" ends the last run
        if token and _is_math(token):
            run.append(token)
            continue
        if any("=" in t for t in run):
            found.append("".join(run).rstrip(_SENTENCE_END))
        run = []
    return found


def equations(completion: str) -> tuple[str, ...]:
    """The sequence of equations in a completion, whitespace removed (empty when it has none)."""
    annotated = [_WHITESPACE.sub("", a) for a in _ANNOTATION.findall(completion)]
    if any(annotated):
        return tuple(a for a in annotated if a)
    return tuple(e for piece in _PIECES.split(completion) for e in _piece_equations(piece) if e)


def reasoning_path(completion: str) -> str:
    """The key two solutions share when they reason the same way: their equations joined by ` | `, or,
    for a solution without equations, its text."""
    found = equations(completion)
    return SEPARATOR.join(found) if found else completion


def reasoning_paths(completions: Iterable[str | None]) -> list[str | None]:
    """`reasoning_path` of each completion (None stays None): the SQL function's body."""
    return [None if c is None else reasoning_path(c) for c in completions]
