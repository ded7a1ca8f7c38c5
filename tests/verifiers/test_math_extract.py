"""Final-answer extraction (strict against lenient), the one-value rule, an adversarial sweep, and the
extraction mode reaching the grader in-process, in pool workers, in score rows and in params."""

from __future__ import annotations

import json
import random

import pytest

from restem.verifiers.math_answer import GSM8KVerifier, MathVerifier, grade
from restem.verifiers.math_extract import DEFAULT_EXTRACTION, check_mode, extract_answer, reference_answer, verifier_options
from restem.verifiers.math_text import one_value

PROSE = "Therefore, the probability that Alice wins the game is 2/3."


def test_strict_needs_a_committed_answer_lenient_falls_back():
    assert extract_answer(PROSE, "strict") == (None, "none")
    assert extract_answer(PROSE, "lenient") == ("2/3", "fallback")
    assert grade(PROSE, "2/3", "strict").verdict == "incorrect"
    assert grade(PROSE, "2/3", "lenient").verdict == "correct"
    # a completion that is nothing but its answer is committed in both modes
    for mode in ("strict", "lenient"):
        assert extract_answer("$\\frac13 $", mode) == ("$\\frac13 $", "bare")
        assert grade("28 percent", "28\\%", mode).verdict == "correct"


def test_committed_answers_read_the_same_in_both_modes():
    cases = {
        "work\n#### 5\n#### 6": ("5", "hashes"),
        "Final Answer: The final answer is $10,455$. I hope it is correct.": ("$10,455$", "final_answer"),
        "So \\boxed{255} and then. Final Answer: The final answer is 7. I hope it is correct.": ("7", "final_answer"),
        "The answer is 4, wait: \\boxed{5}": ("5", "boxed"),
        "The integers are \\boxed{-2} and \\boxed{1}.": ("-2, 1", "boxed"),
        "x\nA: 5\nA: 6": ("6", "answer_line"),
    }
    for text, expected in cases.items():
        for mode in ("strict", "lenient"):
            assert extract_answer(text, mode) == expected, (text, mode)


def test_modes_are_checked():
    assert check_mode("lenient") == "lenient"
    with pytest.raises(ValueError, match="strict"):
        check_mode("loose")
    with pytest.raises(ValueError):
        MathVerifier(extraction="loose")
    assert verifier_options("math", "lenient") == {"extraction": "lenient"}
    assert verifier_options("arithmetic", "lenient") == {}  # arithmetic rows stay exactly as they were


def test_reference_answer_reads_solutions_and_bare_answers():
    assert reference_answer("Janet sells 9 eggs.\nA: 18") == "18"
    assert reference_answer("steps\n#### 1,000") == "1,000"
    assert reference_answer("so $x = \\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert reference_answer("$7 = 11a+c$") == "$7 = 11a+c$"


@pytest.mark.parametrize("pred, why", [
    ("20=5", "an equation"), ("100=5", "an equation"), ("3 = 5", "an equation"), ("x = 3 = 5", "an equation"),
    ("5>>5", "markup"), ("5<<5", "markup"), ("5 6", "a second number"), ("5, 6", "a second value"),
    ("5 \\text{ or } 6".replace("\\text{ or }", " or "), "a second value"),
])
def test_one_value_refuses(pred, why):
    value, reason = one_value(pred, "5")
    assert reason is not None and why.split()[-1] in reason, (pred, reason)


def test_one_value_accepts_a_named_value_and_relations_where_the_reference_is_one():
    assert one_value("x=5", "5") == ("5", None)
    assert one_value("k \\approx 11", "11") == ("11", None)
    assert one_value("x = \\frac{1}{3} \\approx 0.33", "\\frac{1}{3}") == ("\\frac{1}{3}", None)
    assert one_value("(p,q) = (1,2)", "(1,2)") == ("(1,2)", None)
    assert one_value("x \\geq 5", "x >= 5") == ("x \\geq 5", None)  # the reference is a relation
    assert one_value("1,-2", "-2, 1") == ("1,-2", None)  # a list where the reference is a list


def _adversarial(rng: random.Random) -> tuple[str, str]:
    """A short string of digits, operators, `####`, boxes and the reference whose committed final
    answer is, by construction, not the reference's value: a different number, an equation or
    relation, markup, a second value, or nothing."""
    ref = rng.randint(2, 99)
    r, other = str(ref), str(rng.choice([n for n in range(0, 120) if n != ref]))
    k = rng.randint(1, 9)
    junk = [r, other, str(k), "+", "-", "*", "/", "=", "<<", ">>", " ", "\\boxed{" + r + "}", "\\boxed{" + other + "}",
            "$", "(", ")", r + "=" + other, "<<" + r + ">>"]
    working = "".join(rng.choice(junk) for _ in range(rng.randint(0, 12)))
    bad = rng.choice([
        other, f"{r}+{k}", f"{r}-{k}", f"{r}*{k + 1}", f"{r}/{k + 1}", f"{k}+{r}",
        f"{other}={r}", f"{r}={other}", f"{r}={r}", f"{other} = {r}", f"{r}>>{r}", f"{r}<<{r}", f"{r}>>{other}",
        f"<<{r}>>", f"{other} {r}", f"{r} {other}", f"{r}, {other}", f"{other}, {r}", f"{r} and {other}",
        f"{r}+{k}={r}", "", f"{r}=",
    ])
    final = rng.choice([f"#### {bad}", f"The answer is {bad}.", f"\\boxed{{{bad}}}" if bad else "#### ",
                        f"Final Answer: The final answer is ${bad}$. I hope it is correct." if bad else "A: "])
    tail = rng.choice(["", f"\n#### {r}", f"\nQ: next?\nThe answer is {r}."]) if final.startswith("####") else ""
    return working + "\n" + final + tail, r


def test_adversarial_strings_never_pass():
    rng = random.Random(20250214)
    cases = [_adversarial(rng) for _ in range(3000)]
    passed = [(mode, text, ref) for text, ref in cases for mode in ("strict", "lenient")
              if grade(text, ref, mode).verdict == "correct"]
    assert not passed, passed[:10]
    # and the same strings with the reference committed instead are graded correct (the sweep can fail)
    fixed = [f"{text.split(chr(10))[0]}\n#### {ref}" for text, ref in cases[:300]]
    assert all(grade(t, ref, "strict").verdict == "correct" for t, (_, ref) in zip(fixed, cases))


def test_mode_reaches_pool_workers_and_in_process():
    from restem.verifiers.batch import grade_batch

    pairs = [(PROSE, {"reference": "2/3"}), ("#### 20=5", {"reference": "5"})]
    for mode, first in (("strict", "incorrect"), ("lenient", "correct")):
        verdicts, stats = grade_batch("math", pairs, workers=2, timeout_s=30.0, options={"extraction": mode})
        assert [v.verdict for v in verdicts] == [first, "incorrect"] and stats["crashes"] == 0
        assert {v.details["extraction"] for v in verdicts} == {mode}
        direct = GSM8KVerifier(extraction=mode)(*pairs[0])
        assert direct.verdict == first and direct.details["extraction"] == mode


def test_score_rows_record_the_mode_and_arithmetic_rows_do_not():
    from restem.verifiers.batch import score_samples

    problems = {"p": {"problem_id": "p", "reference": "2/3", "prompt": "", "meta": {}}}
    samples = [{"sample_id": "s", "problem_id": "p", "iteration": 1, "completion": PROSE}]
    for mode, verdict in (("strict", "incorrect"), ("lenient", "correct")):
        (row,) = score_samples("math", samples, problems, workers=1, extraction=mode)
        assert json.loads(row.details)["extraction"] == mode and row.verdict == verdict
        assert row.verifier.startswith("math 3+")
    problems = {"p": {"problem_id": "p", "reference": "5", "prompt": "2+3=", "meta": {}}}
    samples = [{"sample_id": "s", "problem_id": "p", "iteration": 1, "completion": "5"}]
    (row,) = score_samples("arithmetic", samples, problems, workers=1, extraction="lenient")
    assert "extraction" not in json.loads(row.details)


def test_params_default_is_the_verifiers_default(tiny_raw):
    from restem.schemas.params import Params, ScoreParams

    assert ScoreParams.model_fields["extraction"].default == DEFAULT_EXTRACTION
    raw = json.loads(json.dumps(tiny_raw))
    raw["score"]["extraction"] = "loose"
    with pytest.raises(Exception, match="extraction"):
        Params.model_validate(raw)


def test_why_strict_is_the_default():
    """Garbage that ends in the reference without committing to it: lenient's last-expression fallback
    takes it, strict never does (the Grow sample of the issue, without its `####`)."""
    garbage = "BV <<3 = 12/125 = $<<50 = $<<300\n20=5"
    assert grade(garbage, "5", "lenient").verdict == "correct"
    assert grade(garbage, "5", "strict").verdict == "incorrect"
    assert DEFAULT_EXTRACTION == "strict"


@pytest.mark.parametrize("text", ["the answer is 5 " * 20000, "\\boxed{1} " * 20000, "\\boxed{" * 20000,
                                  "\\boxed{5}\n" + "Q: x\n" * 20000, "Final Answer: The final answer is 4. " * 5000])
def test_degenerate_outputs_grade_in_linear_time(text):
    """A model stuck in a loop writes the same marker thousands of times; extraction must not go
    quadratic (the pool would time the sample out as `error`)."""
    import time

    started = time.perf_counter()
    for mode in ("strict", "lenient"):
        grade(text, "5", mode)
    assert time.perf_counter() - started < 5.0
