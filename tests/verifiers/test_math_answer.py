"""Golden table for the math verifier: every row is a real case or a known math-verify issue."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from restem.verifiers.base import get_verifier
from restem.verifiers.math_answer import MathVerifier, answers_equivalent, clean_answer, exact_number
from restem.verifiers.math_extract import extract_answer, last_boxed

GOLDEN = Path(__file__).with_name("golden_math.csv")


def _golden_rows() -> list[dict]:
    with GOLDEN.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_golden_table_is_large_and_balanced():
    rows = _golden_rows()
    assert len(rows) >= 120
    assert {r.get("extraction") or "" for r in rows} == {"", "strict", "lenient"}
    verdicts = {r["expected"] for r in rows}
    assert verdicts == {"correct", "incorrect"}
    assert all(r["why"].strip() for r in rows), "every row says why it is there"


def _golden_cases() -> list[tuple[dict, str]]:
    """(row, extraction mode): a row with an empty `extraction` holds in both modes."""
    return [(r, mode) for r in _golden_rows() for mode in ((r.get("extraction") or "strict lenient").split())]


@pytest.mark.parametrize("row, mode", _golden_cases(), ids=lambda x: x["why"] if isinstance(x, dict) else x)
def test_golden_row(row, mode):
    verdict = MathVerifier(extraction=mode)(row["prediction"], {"reference": row["gold"]})
    assert verdict.verdict == row["expected"], (row, verdict)
    assert verdict.reward == (1.0 if row["expected"] == "correct" else 0.0)
    assert verdict.details["extraction"] == mode


def test_guards_cover_real_math_verify_false_positives():
    """math-verify alone says these are equal; the guard rows in the table must say otherwise."""
    from math_verify import parse, verify

    gold, pred = parse("$\\frac{1}{2004!}$", parsing_timeout=None), parse("$\\frac{1}{2006!}$", parsing_timeout=None)
    assert verify(gold, pred, timeout_seconds=None), "math-verify fixed this; keep the guard row anyway"
    assert answers_equivalent("\\frac{1}{2004!}", "\\frac{1}{2006!}")[0] is False


def test_last_boxed_keeps_nested_braces_and_takes_the_last():
    assert last_boxed("\\boxed{1} and \\boxed{\\frac{a}{\\sqrt{b}}}") == "\\frac{a}{\\sqrt{b}}"
    assert last_boxed("\\boxed 7 done") == "7"
    assert last_boxed("\\boxed{unbalanced") is None
    assert last_boxed("no box") is None


def test_extract_answer_order_and_markers():
    assert extract_answer("work\n#### 1,234\n") == ("1,234", "hashes")
    assert extract_answer("x\nA: 5\nA: 6") == ("6", "answer_line")
    assert extract_answer("So the answer is 12.") == ("12", "answer_is")
    assert extract_answer("nothing here") == (None, "none")


def test_clean_answer_and_exact_number():
    assert clean_answer("$1,000.") == "1000"
    assert clean_answer("\\$5 dollars") == "5"
    assert exact_number("\\frac{-3}{4}") == exact_number("-0.75")
    assert exact_number("x+1") is None
    assert exact_number("1/0") is None


def test_unreadable_gold_is_unverifiable_not_incorrect():
    verdict = MathVerifier()("\\boxed{5}", {"reference": "\\begin{weird"})
    assert verdict.verdict == "unverifiable" and verdict.correct is None


def test_registry_names_and_versions():
    for name in ("math", "gsm8k"):
        verifier = get_verifier(name)
        assert verifier.name == name
        assert "math-verify-0.9.0" in verifier.version and verifier.version.startswith("3+")
