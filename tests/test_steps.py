"""The GSM8K/LaTeX step checker (verifiers/steps.py): hand-made traps and a few real solutions."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from tests.conftest import real_data
from restem.verifiers.step_arith import safe_eval
from restem.verifiers.steps import check_solution, step_errors, steps_valid

GSM8K_SOLUTIONS = real_data("gsm8k/example_model_solutions.jsonl")


@pytest.mark.parametrize("expr, value", [
    ("2+3*4", Fraction(14)), ("(2+3)*4", Fraction(20)), ("7/2", Fraction(7, 2)), ("0.1+0.2", Fraction(3, 10)),
    ("-3**2", Fraction(-9)), ("2**-1", Fraction(1, 2)),
])
def test_safe_eval_is_exact(expr, value):
    assert safe_eval(expr) == value


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "open('x')", "9**9**9", "2**0.5", "1/0", "a+1", "[1]*3", "lambda: 1", "1 if 1 else 2",
])
def test_safe_eval_refuses_anything_but_arithmetic(expr):
    assert safe_eval(expr) is None


@pytest.mark.parametrize("text", [
    "<<580/110=5.2727272727272725>>5.27 per hour",       # displayed value rounded
    "45/10 = 5 buses",                                   # ceiling in a word problem
    "80,000+50,000 = <<80000+50000=130000>>130,000",     # thousands separators
    "fee is $350 000 x 5/100 = $<<350000*5/100=17500.0>>17 500.",  # space-grouped thousands
    "130,000*150% = $<<130000*150*.01=195000.0>>195,000",  # percent as /100
    "so 50 * 20% = 10 apples",                           # percent on the left
    "<<20*.01=0.2>>20% of the class",                    # value displayed as a percentage
    "3 hours * 5 = 15 hours",                            # unit splits the expression: not checked, not wrong
    "<<4.20+9.45+1.35=14.999999999999998>>",             # float noise in the calculator's own output
    "It costs $5 x 3 = $15.",                            # x as multiplication, dollars
    "she bought <<2+2=4>>4 500-gram bags",               # two numbers after the annotation
    "2/3 = 0.67",
])
def test_rounding_units_separators_and_percentages_are_not_errors(text):
    assert steps_valid(text) is not False, step_errors(text)


@pytest.mark.parametrize("text", [
    "16 - 3 - 4 = <<16-3-4=8>>8 eggs",                   # annotation wrong
    "<<3*4=12>>13 apples",                               # text does not show the calculator's value
    "5 x 3 = 16",
    "2 * 3 = 6 and 6 + 1 = 8",                           # second step of two
    "So 25/75 x 100% = 25%",
    "1,000 + 2,000 = 4,000",
    "2/3 = 0.65",                                        # neither rounding, floor nor ceiling of 0.666...
    r"We get $\frac{1}{2} + \frac{1}{3} = \frac{2}{5}$",
    r"\[ \sqrt{16} \cdot 2 = 6 \]",
])
def test_false_arithmetic_is_caught(text):
    assert steps_valid(text) is False


@pytest.mark.parametrize("text", [
    "The new phone costs $1800 - $2000 = $200 less.",        # a negative difference written as its magnitude
    "He saves $5.25 - $15.75 = $10.5 on the shirt.",
    "So 1,800 - 2,000 = <<1800-2000=200>>200 dollars less",
    "3 - 5 = -2",                                            # the signed result stays right
])
def test_magnitude_of_a_negative_difference_is_not_an_error(text):
    assert steps_valid(text) is True, step_errors(text)


@pytest.mark.parametrize("text", [
    "$1800 - $2000 = $300",                                   # magnitude wrong too
    "$2000 - $1800 = -$200",                                  # positive difference with a wrong sign
    "(0 - 2) * 3 = 6",                                        # the last operation is no subtraction
    "2 + 3 = -5",
])
def test_only_the_sign_of_a_subtraction_is_forgiven(text):
    assert steps_valid(text) is False, text


def test_latex_equations_are_checked_with_exact_values():
    report = check_solution(r"First $\frac{1}{2} + \frac{1}{3} = \frac{5}{6}$, then $\sqrt{2}\cdot\sqrt{2} = 2$, "
                            r"and $2^{10} = 1,024$.")
    assert [s.kind for s in report.checked] == ["latex", "latex", "latex"]
    assert report.valid is True


def test_symbols_and_prose_are_unchecked():
    assert steps_valid("Let x = 5 and y = 2x, so the answer is y.") is None
    assert steps_valid(r"$x^2 + 1 = 10$") is None
    assert steps_valid("") is None and steps_valid(None) is None


def test_arithmetic_scratchpad_steps():
    assert steps_valid("6+8+0=14,6+1+1=8,3+9+0=12;1284") is True
    assert steps_valid("6+8+0=14,6+1+1=9;1284") is False


def test_report_names_the_wrong_step():
    errors = step_errors("He has 2 * 3 = <<2*3=6>>6 toys, then 6 + 1 = <<6+1=8>>8.")
    assert any("6+1" in e and "7" in e for e in errors), errors


def _real_solutions() -> list[tuple[str, bool]]:
    out = []
    with GSM8K_SOLUTIONS.open() as f:
        for line in f:
            record = json.loads(line)
            out += [(v["solution"], v["is_correct"]) for v in record.values() if isinstance(v, dict)]
    return out


def test_real_gsm8k_solutions():
    solutions = _real_solutions()
    # the first problem's gold-style solution: every annotation and equation is right
    assert steps_valid("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
                       "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\nA: 18") is True
    texts = {t for t, _ in solutions}
    # two real slips from the file: 5-3 written as 2.5, and a nonsense percentage
    slip = next(t for t in texts if "<<5-3=2.5>>" in t)
    assert steps_valid(slip) is False
    percent = next(t for t in texts if "25/75 x 100% = 25%" in t)
    assert steps_valid(percent) is False
    checked = [steps_valid(t) for t, ok in solutions[:400] if ok]
    # solutions labelled correct are almost all arithmetically sound and almost all checkable
    assert sum(v is not None for v in checked) >= 0.95 * len(checked)
    assert sum(v is False for v in checked) <= 0.05 * len(checked)
