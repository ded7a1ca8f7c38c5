"""The reversed-addition format with index hints (issue 6): prompt, gold steps, consistency, the step
checker, the verifier's verdicts and the generator's `format: reversed`."""

from __future__ import annotations

import pytest

from restem.verifiers.reversed_addition import (
    ReversedAdditionVerifier,
    check_steps,
    consistent,
    extract_answer,
    make_prompt,
    make_solution,
    parse_prompt,
)


def test_issue_example():
    assert make_prompt(4713, 59, 1) == "39b15c70d40e="
    assert make_solution(4713, 59, 1) == "b21c70d70e40"
    assert extract_answer("b21c70d70e40") == 4772
    assert consistent("39b15c70d40e=", "b21c70d70e40")
    assert check_steps("39b15c70d40e=", "b21c70d70e40") == (True, "ok")


@pytest.mark.parametrize(
    "a,b,offset,prompt,solution",
    [
        (0, 0, 0, "00a=", "a00"),
        (9, 9, 3, "99d=", "d81"),            # the final carry is the last step's carry out: 18
        (99, 1, 25, "91z90a=", "z01a01"),    # tags wrap around from z to a; 100
        (5, 123, 7, "53h02i01j=", "h80i20j10"),  # the shorter operand is zero-padded: 128
        (505, 505, 12, "55m00n55o=", "m01n10o01"),  # 1010
    ],
)
def test_hand_made_cases(a, b, offset, prompt, solution):
    assert make_prompt(a, b, offset) == prompt
    assert make_solution(a, b, offset) == solution
    assert extract_answer(solution) == a + b
    assert consistent(prompt, solution)
    assert check_steps(prompt, solution) == (True, "ok")


def test_gold_solutions_are_right_for_many_operands():
    import random

    rng = random.Random(3)
    for _ in range(500):
        a, b, off = rng.randrange(10**rng.randint(1, 12)), rng.randrange(10**rng.randint(1, 12)), rng.randrange(26)
        prompt, solution = make_prompt(a, b, off), make_solution(a, b, off)
        assert extract_answer(solution) == a + b
        assert check_steps(prompt, solution) == (True, "ok")
        assert len(parse_prompt(prompt)) == len(solution) // 3 == max(len(str(a)), len(str(b)))


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_prompt(1, 2, 26)
    with pytest.raises(ValueError):
        make_solution(-1, 2, 0)


def test_consistency_needs_the_prompts_tags_in_order_one_per_digit():
    prompt = "39b15c70d40e="
    assert consistent(prompt, "b00c00d00e00")           # wrong digits, right tags: still consistent
    assert not consistent(prompt, "b21c70d70")          # a step short
    assert not consistent(prompt, "b21c70d70e40f00")    # a step too many
    assert not consistent(prompt, "b21d70c70e40")       # tags out of order
    assert not consistent(prompt, "a21b70c70d40")       # tags of another offset
    assert not consistent(prompt, "b21c70d70e4")        # malformed step
    assert not consistent(prompt, "b21c70d70e42")       # a carry is 0 or 1
    assert not consistent("4713+59=", "b21c70d70e40")   # not a prompt of this format


def test_step_checker_finds_the_first_wrong_step():
    prompt = "39b15c70d40e="
    ok, why = check_steps(prompt, "b20c70d70e40")
    assert ok is False and "step 1" in why and "carries 1" in why
    ok, why = check_steps(prompt, "b21c80d70e40")
    assert ok is False and "step 2" in why and "ends in 7" in why
    ok, why = check_steps(prompt, "b21c70d70f40")
    assert ok is False and "step 4" in why and "tag" in why
    ok, why = check_steps(prompt, "b21c70d70")
    assert ok is False and "3 steps for 4" in why
    ok, why = check_steps(prompt, "b21 c70")
    assert ok is False
    assert check_steps("4713+59=", "b21c70d70e40")[0] is None


def test_extract_answer():
    assert extract_answer("") is None
    assert extract_answer("b21c70d70e4") is None
    assert extract_answer("  b21c70d70e40\n") == 4772
    assert extract_answer("a81") == 18
    assert extract_answer("a00b00") == 0


def test_verifier_verdicts():
    v = ReversedAdditionVerifier()
    problem = {"prompt": "39b15c70d40e=", "reference": "4772"}
    right = v("b21c70d70e40", problem)
    assert (right.verdict, right.reward, right.correct, right.extracted, right.steps_valid) == (
        "correct", 1.0, True, "4772", True)
    assert right.details["consistent"] is True
    wrong = v("b21c70d80e40", problem)
    assert (wrong.verdict, wrong.reward, wrong.correct, wrong.extracted, wrong.steps_valid) == (
        "incorrect", 0.0, False, "4872", False)
    # right sum, wrong reasoning: every digit is right but the first step drops its carry
    lucky = v("b20c70d70e40", problem)
    assert lucky.correct is True and lucky.steps_valid is False
    none = v("the answer is 4772", problem)
    assert (none.verdict, none.correct, none.extracted, none.steps_valid) == ("incorrect", False, None, False)
    assert none.details["answer"] == "none found"
    # consistent tags are reported even on a wrong answer; a wrong tag is not consistent
    assert wrong.details["consistent"] is True
    assert v("b21c70d70f40", problem).details["consistent"] is False


def test_registered():
    from restem.schemas.params import ScoreParams
    from restem.verifiers.base import IN_PROCESS, get_verifier, get_verifier_entry, score_all

    v = get_verifier("reversed_addition")
    assert (v.name, v.version) == ("reversed_addition", "1")
    assert get_verifier_entry("reversed_addition").runs == IN_PROCESS
    assert ScoreParams(verifier="reversed_addition").verifier == "reversed_addition"
    verdicts = score_all(v, [("b21c70d70e40", {"prompt": "39b15c70d40e=", "reference": "4772"})])
    assert verdicts[0].correct is True


def test_charset_covers_the_format():
    from restem.training.modeling import CHARSET, build_char_tokenizer

    text = make_prompt(98765432109876, 12345678901234, 20) + make_solution(98765432109876, 12345678901234, 20)
    assert set("0123456789=abcdefghijklmnopqrstuvwxyz") <= set(CHARSET)
    tok = build_char_tokenizer()
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids and len(ids) == len(text)


def _task(**over):
    from restem.schemas.params import ArithmeticTask

    raw = {"demo_digits": {"low": 1, "high": 4}, "demo_count": 400, "train_digits": {"low": 5, "high": 12},
           "train_count": 300, "test_sets": {f"d{d:02d}": d for d in range(1, 13)}, "test_count": 40,
           "format": "reversed"}
    raw.update(over)
    return ArithmeticTask.model_validate(raw)


def test_generation_reversed_format():
    from restem.stages.problems import generate_arithmetic

    tables = generate_arithmetic(_task(), seed=5)
    assert {len(tables["test"]), len(tables["train"]), len(tables["demos"])} == {480, 300, 400}
    ids = [p.problem_id for split in tables.values() for p in split]
    assert len(ids) == len(set(ids)), "splits overlap or repeat"
    by_subset: dict[str, set[int]] = {}
    for p in tables["test"]:
        by_subset.setdefault(p.subset, set()).add(p.difficulty)
    assert by_subset == {f"d{d:02d}": {d} for d in range(1, 13)}
    assert {p.difficulty for p in tables["train"]} == set(range(5, 13))
    assert {p.difficulty for p in tables["demos"]} == {1, 2, 3, 4}
    offsets = set()
    for p in tables["demos"] + tables["train"] + tables["test"]:
        positions = parse_prompt(p.prompt)
        assert len(positions) == p.difficulty and p.source == "reversed_addition"
        assert check_steps(p.prompt, p.solution) == (True, "ok")
        assert str(extract_answer(p.solution)) == p.reference
        offsets.add(positions[0][2])
    assert len(offsets) == 26


def test_generation_is_deterministic_and_seeded():
    from restem.stages.problems import generate_arithmetic

    first, again = generate_arithmetic(_task(), seed=5), generate_arithmetic(_task(), seed=5)
    assert [p.model_dump() for s in first.values() for p in s] == [p.model_dump() for s in again.values() for p in s]
    other = generate_arithmetic(_task(), seed=6)
    assert [p.prompt for p in other["test"]] != [p.prompt for p in first["test"]]


def test_generation_default_format_unchanged():
    """The scratchpad format stays the default and the new field stays out of dumps when default."""
    from restem.stages.problems import generate_arithmetic

    task = _task(format="scratchpad")
    assert "format" not in task.model_dump()
    assert "format" not in _task().model_copy(update={"format": "scratchpad"}).model_dump()
    assert _task().model_dump()["format"] == "reversed"
    tables = generate_arithmetic(task, seed=5)
    assert all("+" in p.prompt and p.source == "arithmetic" for p in tables["test"])


def test_generation_too_many_one_digit_problems_is_a_clear_error():
    from restem.schemas.errors import RestemError
    from restem.stages.problems import generate_arithmetic

    # 1-digit reversed problems: 10 * 10 operand pairs * 26 offsets = 2600 distinct prompts
    assert len(generate_arithmetic(_task(test_sets={"d1": 1}, test_count=2000, demo_count=10,
                                         train_count=10), seed=0)["test"]) == 2000
    with pytest.raises(RestemError, match="cannot draw"):
        generate_arithmetic(_task(test_sets={"d1": 1}, test_count=2700), seed=0)
