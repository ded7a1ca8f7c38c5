"""Final-answer extraction for math completions (GSM8K, MATH): our markers first, math-verify's after.

`extract_answer(completion, mode)` returns (answer text or None, how it was found). Order:

1. The solution ends at its first terminal marker and everything after it is ignored (a base model
   that goes on to invent the next question, `#### 5\\n#### 6`, committed to 5): the line of the first
   `####` (GSM8K's format ends a solution with it; `#### Step 1` is a markdown heading, not a marker),
   a chat end-of-turn token, or a new-question line (`Q:`, `Question:`, `Problem:`) after an answer was
   stated. The Minerva sentence `... I hope it is correct.` is not terminal: a chat model that
   apologises and restates its final answer has changed it (Math-Verify's table has such a case).
2. In what is left, the last final-answer statement (`#### X`, `Final Answer: The final answer is X`,
   `... final answer ... is X`, `the answer is X`, an `A:`/`Answer:` line) and the last run of boxes
   (`\\boxed{a} and \\boxed{b}`: several boxes form one set, `a, b`) compete: the statement wins when it
   comes after the last box, the box otherwise (`The answer is $\\boxed{6}$` is the box either way).
3. Nothing stated: a completion that is nothing but one expression (`$\\frac13$`, `1,000.99`,
   `28 percent`) is its own answer (found_by `bare`).
4. `lenient` only: math-verify's own extraction (its LaTeX and expression configs: answer-anchored
   patterns, then the last LaTeX environment, then the last number), found_by `fallback`.
   `strict` stops at 3: a committed final answer is required (good for training data).

Whether the found text is one value (not `20=5`) is decided against the reference in
`restem.verifiers.math_answer`, which owns equivalence.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache
from typing import Optional

EXTRACTION_MODES = ("strict", "lenient")
# Chosen from measurements (README, verifiers/math): both modes agree on all 5,276 real GSM8K
# solutions; on Math-Verify's table lenient agrees on 186 of 191 rows and strict on 158 (29 of its 33
# misses are answers left in running text); garbage ending in the reference without committing to it
# (`... 20=5`) passes lenient's last-expression fallback and never strict. Training data wants strict.
DEFAULT_EXTRACTION = "strict"
# Verifiers that take `extraction` (the others have no answer extraction to choose).
EXTRACTING_VERIFIERS = frozenset({"math", "gsm8k"})

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
# `#### 18` ends a GSM8K solution; `#### Step 1: ...` is a markdown heading, not an answer.
_HASHES = re.compile(r"(?<!#)####(?![ \t]*(?:(?!(?:sqrt|exp|log|sin|cos|tan)\b)[A-Za-z]{3,}|#))[ \t]*")
_HOPE = re.compile(r"I hope it is correct\.?", re.IGNORECASE)
_END_OF_TURN = re.compile(r"<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|</s>")
_NEW_QUESTION = re.compile(r"^[ \t]*(?:Q|Question|Problem)[ \t]*:", re.MULTILINE)
_FINAL_IS = re.compile(r"final answer\b(?:[^\n.]|\.(?=\S)){0,100}?\bis\b[ \t]*:?", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\banswer\s+is\b[ \t]*:?", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"(?:^[ \t]*(?:\*\*)?(?:A|[Aa]nswer)|\b[Ff]inal [Aa]nswer)(?:\*\*)?[ \t]*:(?:\*\*)?[ \t]*",
                          re.MULTILINE)
# What may sit between two boxes of one answer: `\boxed{-2} \quad \text{and} \quad \boxed{1}`.
_BOX_JOINER = re.compile(r"^(?:\s|[,;.$]|\\[()\[\],;!]|\\quad|\\qquad|\\text\{\s*(?:and|or|,)\s*\}|\band\b|\bor\b)*$")
# A statement's value is read from at most this many characters (one sentence or display).
_VALUE_CHARS = 2000
# Math delimiters a statement's value may be wrapped in.
_OPENERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def check_mode(mode: str) -> str:
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"extraction must be one of {list(EXTRACTION_MODES)}, got {mode!r}")
    return mode


def verifier_options(verifier: str, extraction: str) -> dict:
    """Constructor options for verifier `verifier` (only the answer verifiers take `extraction`)."""
    return {"extraction": check_mode(extraction)} if verifier in EXTRACTING_VERIFIERS else {}


# ---------------------------------------------------------------------------------------------- boxes


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of each balanced `{` -> the index just past its `}` (escaped `\\{`, `\\}` ignored); one pass."""
    pairs, stack = {}, []
    for i, ch in enumerate(text):
        if ch in "{}" and (i == 0 or text[i - 1] != "\\"):
            if ch == "{":
                stack.append(i)
            elif stack:
                pairs[stack.pop()] = i + 1
    return pairs


def boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every balanced `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`), in order;
    a box inside a box counts once, as the outer one."""
    out: list[tuple[int, int, str]] = []
    pairs = _brace_pairs(text) if "{" in text else {}
    for m in _BOXED.finditer(text):
        if out and m.start() < out[-1][1]:
            continue  # inside the previous box
        end = m.end()
        if end < len(text) and text[end] == "{":
            close = pairs.get(end)
            if close is not None:
                out.append((m.start(), close, text[end + 1 : close - 1].strip()))
        elif m.group(0).endswith((" ", "\t")):  # `\\boxed 5`: one token
            token = re.match(r"[^\s$]+", text[end : end + 200])
            if token:
                out.append((m.start(), end + token.end(), token.group(0)))
    return out


def last_boxed(text: str) -> Optional[str]:
    """The content of the last box, None when there is none."""
    found = boxes(text)
    return found[-1][2] if found else None


def _last_box_run(text: str) -> Optional[tuple[int, int, str]]:
    """(start, end, answer) of the last run of boxes joined only by `and`, commas, spacing: one set."""
    found = boxes(text)
    if not found:
        return None
    run = [found[-1]]
    for box in reversed(found[:-1]):
        if not _BOX_JOINER.match(text[box[1] : run[0][0]]):
            break
        run.insert(0, box)
    contents = dict.fromkeys(c for _, _, c in run if c)  # a set: a repeated box is one answer
    return run[0][0], run[-1][1], ", ".join(contents)


# -------------------------------------------------------------------------------------------- statements


def _cut(text: str) -> str:
    """The completion up to the end of its first terminal marker (see the module header)."""
    end = len(text)
    m = _HASHES.search(text)
    if m:
        line_end = text.find("\n", m.end())
        end = min(end, line_end if line_end >= 0 else len(text))
    m = _END_OF_TURN.search(text)
    if m:
        end = min(end, m.start())
    text = text[:end]
    if _NEW_QUESTION.search(text):
        answered = [m.start() for m in (p.search(text) for p in (_HASHES, _FINAL_IS, _ANSWER_IS, _ANSWER_LINE, _BOXED))
                    if m]
        if answered:
            m = _NEW_QUESTION.search(text, min(answered))
            if m:
                return text[: m.start()]
    return text


def _statement_value(rest: str) -> str:
    """The value a statement gives: up to the end of its sentence or line, math kept whole."""
    rest = rest.lstrip(" \t")
    hope = _HOPE.search(rest)
    if hope:
        rest = rest[: hope.start()]
    out, i, closer = [], 0, None
    while i < len(rest):
        if closer is None:
            if rest[i] == "\n":
                break
            escaped = i > 0 and rest[i - 1] == "\\"
            if rest[i] == "." and (i + 1 == len(rest) or rest[i + 1].isspace()) and not escaped:
                break
            opened = next(((o, c) for o, c in _OPENERS if rest.startswith(o, i) and not escaped), None)
            if opened:
                closer = opened[1]
                out.append(opened[0])
                i += len(opened[0])
                continue
        elif rest.startswith(closer, i) and not (i and rest[i - 1] == "\\" and closer == "$"):
            out.append(closer)
            i += len(closer)
            closer = None
            continue
        out.append(rest[i])
        i += 1
    return re.sub(r"^(?:\\?[\"'*])+|(?:\\?[\"'*])+$", "", "".join(out).strip()).strip()


_MATH_SPAN = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|\$[^$]+\$", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?\s*(?:%|percent\b)?")


def _words(text: str) -> list[str]:
    """Words of three letters or more outside LaTeX commands and math names: a sentence, not a value."""
    plain = _MATH_SPAN.sub(" ", re.sub(r"\\[A-Za-z]+(?:\{[^{}]*\})?", " ", text))
    return [w for w in re.findall(r"(?<![\\A-Za-z])[A-Za-z]{3,}", plain)
            if w.lower() not in {"sqrt", "exp", "log", "sin", "cos", "tan", "sec", "csc", "cot"}]


def sentence_value(value: str) -> str:
    """The value a worded statement gives (`Jane started growing Sphere 3 hours ago` gives 3): its one
    math span or its one number; with several, the statement unchanged (not one value)."""
    if not _words(value) or boxes(value):
        return value
    spans = _MATH_SPAN.findall(value)
    if len(spans) == 1 and not _NUMBER.search(_MATH_SPAN.sub(" ", value)):
        return spans[0]
    numbers = _NUMBER.findall(value) if not spans else []
    return numbers[0].strip() if len(numbers) == 1 else value


def _statements(text: str) -> list[tuple[int, str, str]]:
    """(position, kind, value text) of the last final-answer statement of each kind in `text`, in order
    (only the last can win, so earlier ones are never read: linear in the text's length)."""
    found = []
    low = text.lower()
    final_spans = [(m.start(), m.end()) for m in _FINAL_IS.finditer(text)] if "final answer" in low else []
    for kind, pattern, needle in (("hashes", _HASHES, "####"), ("final_answer", _FINAL_IS, "final answer"),
                                  ("answer_is", _ANSWER_IS, "answer"), ("answer_line", _ANSWER_LINE, ":")):
        if needle not in low:  # the cheap test first: most completions hold one marker at most
            continue
        for m in reversed(list(pattern.finditer(text))):
            if kind == "answer_is" and _inside(m.start(), final_spans):
                continue  # `answer is` inside `final answer is`: one statement
            value = _statement_value(text[m.end() : m.end() + _VALUE_CHARS])
            if kind == "answer_line" and (_FINAL_IS.match(value) or _ANSWER_IS.search(value[:40])):
                continue  # `Final Answer: The final answer is X`: the inner statement gives X
            found.append((m.start(), kind, value))
            break
    return sorted(found)


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    """Whether `pos` lies in one of the sorted, disjoint `spans`."""
    k = bisect.bisect_right(spans, (pos, float("inf"))) - 1
    return k >= 0 and spans[k][0] <= pos < spans[k][1]


# ----------------------------------------------------------------------------------------------- bare


_UNIT_TAIL = re.compile(r"(?:\\?%|percent(?:age)?|pct|[€£¥]|m²|\\text\{[^{}]*\}|\\mbox\{[^{}]*\}|\s|[.$])*$",
                        re.IGNORECASE)


def _bare(text: str) -> Optional[str]:
    """The completion when it is nothing but one expression (delimiters, units, percent aside)."""
    t = text.strip()
    if not t or "\n" in t.strip() and not t.startswith(("$$", "\\[")):
        return None
    body = t
    for left, right in _OPENERS:
        if body.startswith(left) and body.rstrip(". ").endswith(right) and len(body) > len(left) + len(right):
            body = body.rstrip(". ")[len(left) : -len(right)]
            break
    core = _UNIT_TAIL.sub("", body).strip().strip("$")
    if not core or len(core) > 200:
        return None
    return None if _words(core) else t  # words mean a sentence, not an answer (`x`, `sqrt` are math)


# ------------------------------------------------------------------------------------ math-verify's


@lru_cache(maxsize=1)
def _mv_regexes():
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig, get_extraction_regexes

    from itertools import groupby

    patterns = [(p, target, prio) for regexes, target in
                get_extraction_regexes([LatexExtractionConfig(), ExprExtractionConfig()])
                for p, prio in regexes]
    patterns.sort(key=lambda x: x[2])
    return [list(group) for _, group in groupby(patterns, key=lambda x: x[2])]


def _matched_latex(match: re.Match) -> str:
    """The LaTeX a math-verify match holds, as written (its groups `first_latex*`, `next<i>_latex*`)."""
    groups = match.groupdict()
    parts = []
    for prefix in ["first_"] + [f"next{i}_" for i in range(1, 6)]:
        part = next((v for k, v in groups.items() if k.startswith(prefix + "latex") and v), None)
        if part:
            run = _last_box_run(part)
            parts.append(run[2] if run else part.strip())
    return ", ".join(parts)


def math_verify_answer(text: str) -> Optional[str]:
    """The answer math-verify's default extraction finds (priority groups in order, rightmost match
    first, the first that parses), as the text the completion wrote (numbers as math-verify read them)."""
    from math_verify.parser import LatexExtractionConfig, extract_match

    for group in _mv_regexes():
        matches = sorted(((m, target) for pattern, target, _ in group for m in pattern.finditer(text)),
                         key=lambda mt: (mt[0].end(), -mt[0].start()), reverse=True)
        for match, target in matches:
            try:
                value, found = extract_match(match, target)
            except Exception:  # noqa: BLE001 - an unparseable match is skipped, as math-verify does
                continue
            if value is not None and found:
                if isinstance(target, LatexExtractionConfig):
                    return _matched_latex(match)
                return found.strip().rstrip(".,;:")
    return None


# ------------------------------------------------------------------------------------------ extraction


def extract_answer(completion: str, mode: str = DEFAULT_EXTRACTION) -> tuple[Optional[str], str]:
    """(raw final answer or None, found_by: hashes | final_answer | answer_is | answer_line | boxed |
    bare | fallback | none). See the module header for the order."""
    text = _cut(completion)
    stated = _statements(text)
    run = _last_box_run(text)
    if stated and (run is None or stated[-1][0] >= run[1]):
        _, kind, value = stated[-1]
        inner = _last_box_run(value)
        return (inner[2] if inner else sentence_value(value)) or None, kind
    if run is not None:
        return run[2] or None, "boxed"
    bare = _bare(text)
    if bare is not None:
        return bare, "bare"
    if check_mode(mode) == "lenient":
        found = math_verify_answer(text)
        if found:
            return found, "fallback"
    return None, "none"


@lru_cache(maxsize=65_536)
def reference_answer(reference: str) -> str:
    """The final answer inside a reference: a full GSM8K/MATH solution, or already the bare answer."""
    text = _cut(reference)
    if _statements(text) or boxes(text):
        found, _ = extract_answer(reference, "strict")
        if found:
            return found
    return reference.strip()
