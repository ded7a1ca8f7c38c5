"""Rationalization (STaR): which problems get a hint, that kept rationales carry the unhinted prompt and are
marked, that the audits tell them apart, that the disabled stage costs nothing and changes nothing, and a
small real run in which a tiny model samples with hints."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from conftest import TINY
from restem.rationalize import RATIONALIZED, hinted_demonstrations, hinted_problems, rationale_rows, unsolved
from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows, write_rows
from restem.schemas.params import FilterParams, Params
from restem.schemas.tables import Kept, Problem, Sample, Score
from restem.stages.filter import rationalized_kept
from restem.verifiers.arithmetic import scratchpad
from restem.workspace import RATIONALE_SCORES, RATIONALES, iter_dir, problems_dir

HINT = "{reference};{prompt}"


def problem(a: int, b: int) -> dict:
    prompt, reference = f"{a}+{b}=", str(a + b)
    return Problem(problem_id=Problem.make_id(prompt, reference), split="train", subset="train", prompt=prompt,
                   reference=reference, difficulty=len(str(a)), source="test").model_dump()


def sample(p: dict, index: int, completion: str, purpose: str = "grow", prompt: str | None = None) -> Sample:
    return Sample(sample_id=f"{purpose}-{p['problem_id']}-{index}", problem_id=p["problem_id"], iteration=1,
                  purpose=purpose, policy="pol", engine="test", sample_index=index, seed=index, temperature=1.0,
                  prompt=prompt or p["prompt"], completion=completion, finish_reason="stop", prompt_tokens=5,
                  completion_tokens=len(completion))


def score(s: Sample, verdict: str, steps_valid: bool | None = True) -> Score:
    correct = {"correct": True, "incorrect": False}.get(verdict)
    return Score(sample_id=s.sample_id, problem_id=s.problem_id, iteration=1, verifier="arithmetic 1",
                 reward=1.0 if correct else 0.0, correct=correct, verdict=verdict, extracted=None,
                 steps_valid=steps_valid)


FILTER = FilterParams(mode="correct", max_per_problem=2, dedup="exact")


def test_only_problems_without_a_correct_sample_get_a_hint():
    solved, wrong, broken, once = problem(12, 34), problem(56, 7), problem(8, 9), problem(40, 2)
    samples = [sample(solved, 0, "x"), sample(solved, 1, "y"), sample(wrong, 0, "z"), sample(broken, 0, "w"),
               sample(once, 0, "a"), sample(once, 1, "b")]
    verdicts = ["correct", "incorrect", "incorrect", "error", "incorrect", "correct"]
    scores = [score(s, v).model_dump() for s, v in zip(samples, verdicts)]
    rows = [s.model_dump() for s in samples]
    assert unsolved(rows, scores) == sorted([wrong["problem_id"], broken["problem_id"]])
    assert unsolved(rows, []) == sorted({p["problem_id"] for p in (solved, wrong, broken, once)})

    problems = {p["problem_id"]: p for p in (solved, wrong, broken, once)}
    hinted = hinted_problems([wrong["problem_id"]], problems, HINT)
    assert [h["prompt"] for h in hinted] == ["63;56+7="]
    assert problems[wrong["problem_id"]]["prompt"] == "56+7="  # the problem itself is left alone
    assert hinted_problems([wrong["problem_id"]], problems, "{prompt} (The answer is {reference}.)")[0]["prompt"] \
        == "56+7= (The answer is 63.)"
    with pytest.raises(RestemError, match="not in data/problems/train.parquet"):
        hinted_problems(["nope"], problems, HINT)


def test_kept_rationales_carry_the_unhinted_prompt_and_are_marked():
    p, q = problem(56, 7), problem(8, 9)
    hp, hq = (h["prompt"] for h in hinted_problems([p["problem_id"], q["problem_id"]],
                                                   {x["problem_id"]: x for x in (p, q)}, HINT))
    right = scratchpad(56, 7)
    rows = [sample(p, 0, right, "rationale", hp), sample(p, 1, right, "rationale", hp),  # duplicate
            sample(p, 2, "6+7+0=14,5+0+1=6;63", "rationale", hp),  # right answer after a wrong step
            sample(p, 3, ";64", "rationale", hp),
            sample(q, 0, ";18", "rationale", hq)]
    verdicts = [("correct", True), ("correct", True), ("correct", False), ("incorrect", False), ("incorrect", False)]
    scores = [score(s, v, ok).model_dump() for s, (v, ok) in zip(rows, verdicts)]
    kept = rationalized_kept([r.model_dump() for r in rows], scores, {x["problem_id"]: x for x in (p, q)}, FILTER)
    assert [k.sample_id for k in kept] == [rows[0].sample_id, rows[2].sample_id]  # dedup, and wrong answers out
    assert {k.prompt for k in kept} == {"56+7="}  # trained WITHOUT the hint
    assert all(k.rule.startswith(f"{RATIONALIZED};correct;cap=2;dedup=exact") for k in kept)
    strict = FILTER.model_copy(update={"require_valid_steps": True, "mode": "threshold"})  # mode: always `correct`
    kept = rationalized_kept([r.model_dump() for r in rows], scores, {x["problem_id"]: x for x in (p, q)}, strict)
    assert [k.sample_id for k in kept] == [rows[0].sample_id]


def test_hinted_demonstrations_are_a_stable_share():
    demos = [{**problem(a, 1), "solution": scratchpad(a, 1)} for a in range(10, 30)]
    assert hinted_demonstrations(demos, HINT, 0.0) == []
    quarter = hinted_demonstrations(demos, HINT, 0.25)
    assert len(quarter) == 5 and all(h["prompt"] == f"{h['reference']};{h['prompt'].split(';')[1]}" for h in quarter)
    assert {h["problem_id"] for h in quarter} < {h["problem_id"] for h in hinted_demonstrations(demos, HINT, 0.5)}
    assert hinted_demonstrations(list(reversed(demos)), HINT, 0.25) == quarter  # chosen by hash, not by order
    assert len(hinted_demonstrations(demos + [{**problem(5, 5), "solution": None}], HINT, 1.0)) == 20


def test_rationale_ids_differ_from_the_grow_sample_ids():
    p = problem(56, 7)
    grow_row = sample(p, 0, "x")
    [r] = rationale_rows([grow_row.model_copy(update={"prompt": "63;56+7="})])
    assert r.purpose == "rationale" and r.sample_id != grow_row.sample_id
    [again] = rationale_rows([grow_row.model_copy(update={"prompt": "63;56+7="})])
    assert again.sample_id == r.sample_id


@pytest.mark.parametrize("hint, message", [
    ("{prompt}", "must contain both"), ("{prompt}{answer}{reference}", "only {prompt} and {reference}"),
    ("{prompt}{reference", "not a valid template")])
def test_bad_hint_templates_are_refused(hint, message):
    raw = {**TINY, "rationalize": {**TINY["rationalize"], "hint": hint}}
    with pytest.raises(ValidationError, match=message):
        Params.model_validate(raw)


def test_label_free_filters_cannot_rationalize():
    raw = {**TINY, "rationalize": {**TINY["rationalize"], "enabled": True}, "filter": {**TINY["filter"],
                                                                                       "mode": "majority"}}
    with pytest.raises(ValidationError, match="label-free"):
        Params.model_validate(raw)


def _hand_made_workspace(root):
    """Iteration 1 of a workspace: problem a solved by Grow, b not (but by a rationale), c by nothing."""
    a, b, c = problem(12, 34), problem(56, 7), problem(8, 9)
    write_rows(problems_dir(root) / "train.parquet", Problem, [Problem(**x) for x in (a, b, c)])
    grow_rows = [sample(a, 0, scratchpad(12, 34)), sample(b, 0, ";62"), sample(c, 0, ";16")]
    write_rows(iter_dir(1, root) / "samples.parquet", Sample, grow_rows)
    write_rows(iter_dir(1, root) / "scores.parquet", Score,
               [score(grow_rows[0], "correct"), score(grow_rows[1], "incorrect"), score(grow_rows[2], "incorrect")])
    hinted = [sample(b, 0, "6+7+0=13,5+0+1=6;63", "rationale", "63;56+7="),
              sample(b, 1, "6+7+0=12,5+0+1=6;63", "rationale", "63;56+7="),
              sample(c, 0, ";18", "rationale", "17;8+9=")]
    return grow_rows, hinted, [score(hinted[0], "correct"), score(hinted[1], "correct", steps_valid=False),
                               score(hinted[2], "incorrect")]


def test_filter_merges_marked_rationales_and_sql_tells_them_apart(tmp_path, tiny_params):
    from restem.query.audits import run_audit
    from restem.query.sql import connect, run_query
    from restem.stages import filter as filter_stage

    _, hinted, verdicts = _hand_made_workspace(tmp_path)
    with pytest.raises(RestemError, match="rationalize.enabled is true"):
        filter_stage.run(tiny_params.model_copy(update={"rationalize": tiny_params.rationalize.model_copy(
            update={"enabled": True})}), 1, tmp_path)
    filter_stage.run(tiny_params, 1, tmp_path)
    plain = (iter_dir(1, tmp_path) / "kept.parquet").read_bytes()
    plain_metrics = (tmp_path / "metrics/filter/iter1.json").read_bytes()
    write_rows(iter_dir(1, tmp_path) / RATIONALES, Sample, [])
    write_rows(iter_dir(1, tmp_path) / RATIONALE_SCORES, Score, [])
    filter_stage.run(tiny_params, 1, tmp_path)  # empty tables, as the disabled stage writes: nothing changes
    assert (iter_dir(1, tmp_path) / "kept.parquet").read_bytes() == plain
    assert (tmp_path / "metrics/filter/iter1.json").read_bytes() == plain_metrics

    write_rows(iter_dir(1, tmp_path) / RATIONALES, Sample, hinted)
    write_rows(iter_dir(1, tmp_path) / RATIONALE_SCORES, Score, verdicts)
    filter_stage.run(tiny_params, 1, tmp_path)
    kept = read_rows(iter_dir(1, tmp_path) / "kept.parquet", Kept)
    marked = [k for k in kept if k["rule"].startswith("rationalized;")]
    assert sorted(k["sample_id"] for k in marked) == sorted(h.sample_id for h in hinted[:2])
    assert {k["prompt"] for k in marked} == {"56+7="}
    assert len(kept) == 3
    metrics = json.loads((tmp_path / "metrics/filter/iter1.json").read_text())
    assert metrics["kept"] == 1  # the ordinary samples' numbers stay as they were
    assert metrics["rationalized"] == {"hinted_problems": 2, "samples": 3, "correct": 2, "kept": 2,
                                       "kept_problems": 1, "kept_wrong_steps": 1}

    con = connect(tmp_path)
    try:
        q = "SELECT starts_with(rule, 'rationalized;') AS r, count(*) AS n FROM kept GROUP BY 1 ORDER BY 1"
        assert run_query(con, q).to_pylist() == [{"r": False, "n": 1}, {"r": True, "n": 2}]
        graded = {g["sample_id"]: g for g in run_query(
            con, "SELECT sample_id, prompt, kept FROM graded WHERE purpose = 'rationale'").to_pylist()}
        assert [graded[h.sample_id]["kept"] for h in hinted] == [True, True, False]
        assert graded[hinted[0].sample_id]["prompt"] == "63;56+7="  # the sample keeps the prompt it was given
        audit = {r["purpose"]: r for r in run_audit(con, "wrong-reasoning").table.to_pylist()}
        assert audit["grow"]["rate"] == 0.0 and audit["grow"]["kept"] == 1
        assert audit["rationale"]["rate"] == 0.5 and audit["rationale"]["kept_wrong_reasoning"] == 1
        outcomes = {r["outcome"]: r["samples"] for r in run_audit(con, "filter").table.to_pylist()}
        assert outcomes["kept"] == 1 and outcomes["kept rationalized"] == 2
    finally:
        con.close()


def test_disabled_stage_writes_empty_tables_without_a_model(tmp_path, tiny_params):
    from restem.stages import rationalize

    _hand_made_workspace(tmp_path)  # no models/ folder at all: nothing may be loaded
    assert rationalize.run(tiny_params, 1, 0, tmp_path) == 0
    assert read_rows(iter_dir(1, tmp_path) / RATIONALES, Sample) == []
    assert read_rows(iter_dir(1, tmp_path) / RATIONALE_SCORES, Score) == []


def test_a_tiny_model_samples_with_hints(tmp_path, tiny_raw):
    """The real thing: a tiny base trained with hinted demonstrations (rationalize.hint_demos); Grow with one sample
    per problem leaves problems unsolved; the model samples them again with the answer in front of the prompt;
    correct rationales are kept without the hint."""
    from restem.stages import base, filter as filter_stage, grow, problems as problems_stage, rationalize, score

    tiny_raw["base"]["train"]["epochs"] = 50
    tiny_raw["grow"]["samples_per_problem"] = 1
    tiny_raw["rationalize"].update(enabled=True, samples_per_problem=8, hint_demos=0.3)
    params = Params.model_validate(tiny_raw)
    root = tmp_path
    problems_stage.run(params, root)
    base.run(params, root)
    trained_on = read_rows(iter_dir(0, root) / "train.parquet", Kept)
    demos = read_rows(problems_dir(root) / "demos.parquet", Problem)
    assert len(trained_on) == len(demos) + round(0.3 * len(demos))
    assert sum(1 for k in trained_on if ";" in k["prompt"]) == round(0.3 * len(demos))  # the hinted ones

    grow.run(params, 1, 0, root)
    score.run(params, 1, root)
    samples = read_rows(iter_dir(1, root) / "samples.parquet", Sample)
    todo = unsolved(samples, read_rows(iter_dir(1, root) / "scores.parquet", Score))
    assert 0 < len(todo) < len(samples)

    right = rationalize.run(params, 1, 0, root)
    rows = read_rows(iter_dir(1, root) / RATIONALES, Sample)
    verdicts = read_rows(iter_dir(1, root) / RATIONALE_SCORES, Score)
    problems = {p["problem_id"]: p for p in read_rows(problems_dir(root) / "train.parquet", Problem)}
    assert len(rows) == 8 * len(todo) == len(verdicts)
    assert {r["problem_id"] for r in rows} == set(todo)
    assert all(r["purpose"] == "rationale" for r in rows)
    assert all(r["prompt"] == f"{problems[r['problem_id']]['reference']};{problems[r['problem_id']]['prompt']}"
               for r in rows)
    assert right == sum(1 for v in verdicts if v["correct"]) > 0
    first = (iter_dir(1, root) / RATIONALES).read_bytes()
    rationalize.run(params, 1, 0, root)
    assert (iter_dir(1, root) / RATIONALES).read_bytes() == first  # same params and seed, same bytes

    filter_stage.run(params, 1, root)
    kept = read_rows(iter_dir(1, root) / "kept.parquet", Kept)
    marked = [k for k in kept if k["rule"].startswith("rationalized;")]
    assert marked and {k["problem_id"] for k in marked} <= set(todo)
    assert all(k["prompt"] == problems[k["problem_id"]]["prompt"] for k in marked)
    by_id = {r["sample_id"]: r for r in rows}
    assert all(k["completion"] == by_id[k["sample_id"]]["completion"] for k in marked)
