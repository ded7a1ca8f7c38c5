"""Checks of the arithmetic inside free-text solutions: "right answer, wrong reasoning" as data.

Three kinds of step are checked, each with exact rational arithmetic:

- calculator annotations `<<48/2=24>>` (GSM8K style): the expression against the value after `=`,
  and the number displayed right after `>>` against that value (`<<580/110=5.2727>>5.27` is rounding);
- plain equations `16 - 3 - 4 = 9` in the text (annotations removed first): the arithmetic run left of
  each `=` against the run to its right;
- LaTeX equations inside `$...$`, `\\(...\\)`, `\\[...\\]`: numeric sides only (`\\frac`, `\\sqrt`,
  `\\cdot`, `^`), compared with sympy.

This module finds the steps in a text and checks the LaTeX ones; the plain-text arithmetic (exact
fractions, the comparison of two runs) is `restem.verifiers.step_arith`. Nothing is ever passed to `eval`:
expressions are parsed with `ast` and only numbers, + - * / **, unary signs, parentheses (and `sqrt` in
LaTeX) are accepted; powers are bounded so a hostile text cannot ask for 9**9**9. Anything else makes a
step unchecked (never wrong).

Leniency, because a false alarm costs more than a missed error here:
- a displayed number with d decimals matches a value within 10**-d (rounding, floor or ceiling:
  "45/10 = 5 buses" is ceiling, not an error);
- `%` is read both as /100 and as a plain number; `$`, thousands separators and trailing units are
  dropped; an `x` or `×` between numbers is multiplication;
- a subtraction whose result is negative may be written as its magnitude ("$1800 - $2000 = $200",
  meaning 200 less): only the sign of the difference is let go, never its size;
- a run that starts with an operator (`3 hours * 5 = 15`: the unit split the expression) is skipped.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from restem.verifiers.step_arith import (BINARY, MAX_EXPONENT, THOUSANDS, close, compare, decimal_places, literal,
                                         values)

_ANNOTATION = re.compile(r"<<([^<>]*)>>")
# thousands may be grouped with commas or spaces (`17 500`) in the number shown after an annotation
_DISPLAYED = re.compile(r"^\s*\$?\s*(-?(?:\d{1,3}(?:[,  ]\d{3})+(?!\d)|\d+)?(?:\.\d+)?)(\s*%)?")
_THOUSANDS_AT = re.compile(r"\d{3}(?!\d)")
_RUN_CHARS = set("0123456789.,$%+-*/x×÷^() \t")
_OPERATOR_CHARS = set("+-*/x×÷^")
_LATEX_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


@dataclass(frozen=True)
class Step:
    """One checked step. `kind`: annotation | display | equation | latex; `ok`: None when unchecked."""

    kind: str
    text: str
    ok: Optional[bool]
    why: str = ""


@dataclass(frozen=True)
class StepReport:
    """Every step found in a solution. `valid`: all checked steps right; None when none was checkable."""

    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def checked(self) -> list[Step]:
        return [s for s in self.steps if s.ok is not None]

    @property
    def errors(self) -> list[Step]:
        return [s for s in self.steps if s.ok is False]

    @property
    def valid(self) -> Optional[bool]:
        return None if not self.checked else not self.errors


# ----------------------------------------------------------------------------------- finding steps


def _annotation_steps(text: str) -> list[Step]:
    """Each `<<expr=value>>`, and the number shown right after it."""
    steps = []
    for m in _ANNOTATION.finditer(text):
        body = m.group(1)
        if "=" not in body:
            steps.append(Step("annotation", m.group(0), None, "no `=` in annotation"))
            continue
        expr, value = body.rsplit("=", 1)
        ok, why = compare(expr, value)
        steps.append(Step("annotation", m.group(0), ok, why))
        shown = _DISPLAYED.match(text[m.end():])
        if shown and shown.group(1) and re.search(r"\d", shown.group(1)):
            percent = (shown.group(2) or "").strip()
            # `17 500` is one number, but `4 500-gram bags` is two: either reading may be the shown value
            readings = [re.sub(r"(?<=\d)[  ](?=\d)", "", shown.group(1)) + percent,
                        re.split(r"[  ]", shown.group(1))[0] + percent]
            shown_text = readings[0]
            ok, why = (None, "annotation not numeric")
            if values(value):
                ok, why = max((_display_check(value, r) for r in dict.fromkeys(readings)), key=lambda t: bool(t[0]))
            steps.append(Step("display", f"{m.group(0)}{shown_text}", ok, why))
    return steps


def _display_check(value: str, shown: str) -> tuple[Optional[bool], str]:
    """A number displayed after an annotation against the annotation's value (rounding allowed)."""
    for a in values(value):
        for b in values(shown):
            if close(a, b, decimal_places(shown)):
                return True, "ok"
    return False, f"annotation says {value.strip()}, text shows {shown}"


def _scan_left(text: str, end: int) -> str:
    """The arithmetic run that ends just before `text[end]` (an `=`)."""
    i = end
    while i > 0:
        c = text[i - 1]
        if c not in _RUN_CHARS:
            break
        if c in "x" and i >= 2 and text[i - 2].isalpha():  # the x of a word (box, tax)
            break
        if c in ".," and (i >= len(text) or not text[i].isdigit()):  # sentence punctuation
            break
        if c == "," and not _THOUSANDS_AT.match(text, i):  # a list comma, as in `=12,1+5`
            break
        i -= 1
    return text[i:end]


def _scan_right(text: str, start: int) -> str:
    """The arithmetic run that starts just after `text[start - 1]` (an `=`)."""
    i = start
    while i < len(text):
        c = text[i]
        if c not in _RUN_CHARS:
            break
        if c == "x" and i + 1 < len(text) and text[i + 1].isalpha():
            break
        if c in ".," and (i + 1 >= len(text) or not text[i + 1].isdigit()):
            break
        if c == "," and not _THOUSANDS_AT.match(text, i + 1):
            break
        i += 1
    run = text[start:i].rstrip()
    while run and run[-1] in _OPERATOR_CHARS | {"(", " "}:  # a dash or open bracket ending the clause
        run = run[:-1].rstrip()
    return run


def _starts_like_a_number(run: str) -> bool:
    """False for runs cut off by a word (`hours * 5`): checking `* 5` alone would be a false alarm."""
    s = run.strip()
    return bool(re.match(r"^(\(|\$|-?\.?\d|-\$|-\()", s))


def _has_operator(run: str) -> bool:
    body = run.strip().lstrip("-")
    return bool(re.search(r"\d\s*\)*\s*[-+*/×÷^x%]\s*\(*\s*[$\d.]", body))


def _equation_steps(text: str, kind: str = "equation") -> list[Step]:
    """Plain `expr = value` equations in text (annotations already removed)."""
    steps = []
    for m in re.finditer(r"(?<![<>=!])=(?![=>])", text):
        left, right = _scan_left(text, m.start()), _scan_right(text, m.end())
        if not left.strip() or not right.strip():
            continue
        if not (_starts_like_a_number(left) and _starts_like_a_number(right)):
            continue
        if not (_has_operator(left) or _has_operator(right)):
            continue
        ok, why = compare(left, right)
        steps.append(Step(kind, f"{left.strip()} = {right.strip()}", ok, why))
    return steps


# ------------------------------------------------------------------------------------------ LaTeX

_LATEX_REPLACE = [
    (re.compile(r"\\left|\\right|\\,|\\;|\\!|\\ "), ""),
    (re.compile(r"\\(?:cdot|times|ast)"), "*"),
    (re.compile(r"\\div"), "/"),
    (re.compile(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}"), ""),
]
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_SQRT = re.compile(r"\\sqrt\s*\{([^{}]*)\}")
_POWER_GROUP = re.compile(r"\^\s*\{([^{}]*)\}")


def latex_to_python(latex: str) -> Optional[str]:
    """A numeric LaTeX expression as Python syntax (with `sqrt(...)`), or None when it has symbols."""
    text = latex
    for pattern, repl in _LATEX_REPLACE:
        text = pattern.sub(repl, text)
    for _ in range(5):  # innermost groups first; five levels of nesting is plenty for equations
        new = _FRAC.sub(r"((\1)/(\2))", text)
        new = _SQRT.sub(r"sqrt(\1)", new)
        new = _POWER_GROUP.sub(r"**(\1)", new)
        if new == text:
            break
        text = new
    text = text.replace("^", "**").replace("{", "(").replace("}", ")")
    text = THOUSANDS.sub("", text).replace("\\%", "/100").replace("%", "/100")
    text = re.sub(r"\)\s*\(", ")*(", text)  # (a)(b): implicit product
    text = re.sub(r"(\d)\s*\(", r"\1*(", text)
    if "\\" in text or re.search(r"[A-Za-z]", text.replace("sqrt", "")):
        return None
    return text


def _sympy_value(node: ast.AST):
    """Evaluate a safe `ast` with sympy numbers (exact rationals and square roots)."""
    import sympy

    if isinstance(node, ast.Expression):
        return _sympy_value(node.body)
    if isinstance(node, ast.Constant):
        return sympy.Rational(str(literal(node.value)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _sympy_value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sqrt"
            and len(node.args) == 1 and not node.keywords):
        return sympy.sqrt(_sympy_value(node.args[0]))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        a, b = _sympy_value(node.left), _sympy_value(node.right)
        if isinstance(node.op, ast.Pow):
            if not (b.is_Integer and abs(int(b)) <= MAX_EXPONENT):
                raise ValueError("only small integer powers are checked")
            return a**b
        return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op)) if not isinstance(
            node.op, ast.Div) else a / b
    raise ValueError(f"{type(node).__name__} is not arithmetic")


def latex_value(latex: str):
    """The exact sympy value of a numeric LaTeX expression, or None."""
    text = latex_to_python(latex)
    if text is None or not text.strip() or len(text) > 500:
        return None
    try:
        value = _sympy_value(ast.parse(text.strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return None
    return None if value is None or not value.is_number or value.has(__import__("sympy").zoo) else value


def _latex_steps(text: str) -> list[Step]:
    """Numeric equation chains `a = b = c` inside LaTeX math."""
    import sympy

    steps = []
    for m in _LATEX_MATH.finditer(text):
        math = next(g for g in m.groups() if g is not None)
        if "=" not in math or "<<" in math:
            continue
        parts = [p for p in re.split(r"(?<![<>!\\])=", math)]
        for left, right in zip(parts, parts[1:]):
            a, b = latex_value(left), latex_value(right)
            if a is None or b is None:
                continue
            dl, dr = decimal_places(left), decimal_places(right)
            if dl is not None and dr is not None:
                continue
            diff = sympy.nsimplify(a - b) if not (a - b).is_Rational else a - b
            if diff == 0:
                ok = True
            else:
                decimals = dr if dr is not None else dl
                tol = sympy.Rational(1, 10**decimals) if decimals is not None else sympy.Rational(1, 10**9) * abs(a)
                ok = bool(abs(sympy.N(a - b, 30)) < tol)
            why = "ok" if ok else f"{left.strip()} is {sympy.N(a, 8)}, not {right.strip()}"
            steps.append(Step("latex", f"{left.strip()} = {right.strip()}", ok, why))
    return steps


# ------------------------------------------------------------------------------------------ public


def check_solution(text: str) -> StepReport:
    """Every checkable step of a solution: annotations, plain equations, LaTeX equations."""
    if not isinstance(text, str) or not text:
        return StepReport()
    steps = _annotation_steps(text)
    plain = _ANNOTATION.sub("", text)
    latex = _latex_steps(plain) if ("\\" in plain or "$" in plain) else []
    if latex:  # equations inside LaTeX were checked with sympy; do not re-read them as plain text
        plain = _LATEX_MATH.sub(" ", plain)
    steps += _equation_steps(plain) + latex
    return StepReport(tuple(steps))


def steps_valid(text: Optional[str]) -> Optional[bool]:
    """True when every checkable step is right, False when one is wrong, None when none is checkable."""
    return check_solution(text or "").valid


def step_errors(text: Optional[str]) -> list[str]:
    """The wrong steps of a solution, each as 'kind: text (why)'."""
    return [f"{s.kind}: {s.text} ({s.why})" for s in check_solution(text or "").errors]


def steps_valid_many(texts: Iterable[Optional[str]]) -> list[Optional[bool]]:
    """`steps_valid` over many texts (what a vectorised DuckDB function calls)."""
    return [steps_valid(t) for t in texts]
