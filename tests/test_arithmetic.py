"""The embedded task's format, its verifier and the step checker."""

import random

import pytest

from restem.verifiers import get_verifier, score_all
from restem.verifiers.arithmetic import check_steps, extract_answer, scratchpad
from restem.schemas.errors import RestemError

V = get_verifier("arithmetic")


def verdict(prompt, completion, reference):
    return V(completion, {"prompt": prompt, "reference": reference})


def test_scratchpad_matches_the_documented_example():
    assert scratchpad(4713, 2859) == "3+9+0=12,1+5+1=7,7+8+0=15,4+2+1=7;7572"


def test_shorter_operand_is_padded_and_final_carry_is_in_the_answer():
    assert scratchpad(47, 2859) == "7+9+0=16,4+5+1=10,0+8+1=9,0+2+0=2;2906"
    assert scratchpad(999, 1) == "9+1+0=10,9+0+1=10,9+0+1=10;1000"
    assert scratchpad(0, 0) == "0+0+0=0;0"


def test_every_gold_scratchpad_checks_out():
    rng = random.Random(1)
    for _ in range(500):
        a, b = rng.randrange(10**rng.randint(1, 7)), rng.randrange(10**rng.randint(1, 7))
        ok, why = check_steps(f"{a}+{b}=", scratchpad(a, b))
        assert ok, (a, b, why)
        v = verdict(f"{a}+{b}=", scratchpad(a, b), str(a + b))
        assert (v.verdict, v.reward, v.correct, v.steps_valid) == ("correct", 1.0, True, True)


@pytest.mark.parametrize(
    "completion, reason",
    [
        ("3+9+0=12,1+5+1=7,7+8+0=15,4+2+1=8;7572", "is 7, not 8"),          # wrong sum, right answer
        ("3+9+0=12,1+5+0=6,7+8+0=15,4+2+1=7;7572", "carries in 0"),          # dropped carry
        ("3+9+0=12,1+5+1=7,4+2+1=7;7572", "3 steps for 4 digit positions"),  # skipped a position
        ("9+3+0=12,1+5+1=7,7+8+0=15,4+2+1=7;7572", "adds 9+3"),              # wrong operand digits
        ("3+9+0=12,1+5+1=7,7+8+0=15,4+2+1=7;7573", "does not follow"),       # answer not from steps
        ("3+9+0=12;1+5+1=7", "steps for 4"),
        ("7572", "no `;`"),
    ],
)
def test_step_checker_finds_each_kind_of_error(completion, reason):
    ok, why = check_steps("4713+2859=", completion)
    assert ok is False and reason in why


def test_right_answer_wrong_reasoning_is_visible():
    v = verdict("4713+2859=", "3+9+0=12,1+5+1=7,7+8+0=15,4+2+1=8;7572", "7572")
    assert v.correct is True and v.reward == 1.0 and v.steps_valid is False


def test_wrong_answer_right_format():
    v = verdict("4713+2859=", "3+9+0=12,1+5+1=7,7+8+0=15,4+2+1=7;7571", "7572")
    assert (v.verdict, v.reward, v.correct, v.extracted) == ("incorrect", 0.0, False, "7571")


def test_no_answer_is_incorrect_not_error():
    v = verdict("1+2=", "1+2+0=3", "3")
    assert v.verdict == "incorrect" and v.extracted is None and v.reward == 0.0


def test_non_addition_prompt_has_no_step_verdict():
    v = verdict("What is 1 plus 2?", "so;3", "3")
    assert v.correct is True and v.steps_valid is None


def test_extract_answer_takes_text_after_last_semicolon():
    assert extract_answer("a;b;12 ") == "12"
    assert extract_answer("1+1+0=2;") is None


def test_exceptions_become_error_verdicts_not_incorrect():
    rows = score_all(V, [("1+2+0=3;3", {"prompt": "1+2="})])  # no reference: KeyError inside
    assert rows[0].verdict == "error" and rows[0].correct is None and "KeyError" in rows[0].details["error"]


def test_unknown_verifier_lists_known_ones():
    with pytest.raises(RestemError, match="unknown verifier 'nope'.*arithmetic"):
        get_verifier("nope")


def test_exact_verifier_normalises_numbers():
    ex = get_verifier("exact")
    assert ex("so the answer is 1,234.", {"reference": "1234"}).correct
    assert ex("#### 18", {"reference": "18.0"}).correct
    assert not ex("#### 19", {"reference": "18"}).correct
