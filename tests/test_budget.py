"""Grow's sampling budget by difficulty (grow.budget, restem/sampling/budget.py): the rounds' rules on a fake
sampler, then real Grow runs of the tiny model: uniform and prop2diff, resume after a crash to identical bytes,
and fixed mode unchanged."""

from __future__ import annotations

import copy
import shutil

import pytest
from pydantic import ValidationError

from conftest import TINY
from restem.sampling.budget import run_rounds, wanted_by_fail_rate
from restem.schemas.errors import RestemError
from restem.schemas.hashing import derive_seed
from restem.schemas.io import read_rows
from restem.schemas.params import GrowParams, Params
from restem.schemas.tables import Budget, Problem, Sample
from restem.stages import grow, problems as problems_stage
from restem.workspace import iter_dir

# problem -> sample indices that are correct (a fake policy): e always right, m right from index 6 on, h never
RIGHT = {"e": set(range(100)), "m": {6, 7, 9, 13}, "h": set()}
PROBLEMS = [{"problem_id": p, "prompt": f"prompt {p}"} for p in sorted(RIGHT)]


def fake_sample(problem: dict, index: int) -> Sample:
    pid = problem["problem_id"]
    return Sample(sample_id=f"{pid}-{index}", problem_id=pid, iteration=1, purpose="grow", policy="pol",
                  engine="fake", sample_index=index, seed=derive_seed(0, 1, pid, index), temperature=1.0,
                  prompt=problem["prompt"], completion="right" if index in RIGHT[pid] else "wrong",
                  finish_reason="stop", prompt_tokens=1, completion_tokens=1)


def fake_params(**budget) -> Params:
    raw = copy.deepcopy(TINY)
    raw["grow"] = {**raw["grow"], "samples_per_problem": 4, "budget": budget}
    return Params.model_validate(raw)


def rounds(params, folder, calls=None, crash_at=None):
    def draw(open_problems, first, label):
        if crash_at is not None and first // 4 == crash_at:
            raise KeyboardInterrupt("simulated crash")
        if calls is not None:
            calls.append(([p["problem_id"] for p in open_problems], first))
        return [fake_sample(p, i) for p in open_problems for i in range(first, first + 4)]

    def grade(rows):
        out = {}
        for r in rows:
            out[r["problem_id"]] = out.get(r["problem_id"], 0) + (r["completion"] == "right")
        return out

    return run_rounds(params, 1, PROBLEMS, "base-key", folder, draw, grade)


def test_uniform_rounds_until_reached_or_capped(tmp_path):
    calls = []
    tables, rows = rounds(fake_params(mode="uniform", k_correct=3, max_trials=12), tmp_path / "r", calls)
    # round 1: all three (e reaches 3 correct at once); round 2: m gets 6,7 (2 correct); round 3: m gets 9 (3)
    assert calls == [(["e", "h", "m"], 0), (["h", "m"], 4), (["h", "m"], 8)]
    got = {r.problem_id: (r.samples, r.rounds, r.correct, r.wanted, r.stop) for r in rows}
    assert got == {"e": (4, 1, 4, 3, "reached"), "m": (12, 3, 3, 3, "reached"), "h": (12, 3, 0, 3, "capped")}
    ids = [s for t in tables for s in t.column("sample_id").to_pylist()]
    assert len(ids) == len(set(ids)) == 28  # indices continue across rounds: no sample twice


def test_prop2diff_wants_correct_samples_in_proportion_to_fail_rate(tmp_path):
    # first round: e 4/4 right (fail 0), m 0/4 (fail 1), h 0/4 (fail 1): 10 wanted split 5 and 5
    assert wanted_by_fail_rate({"e": 4, "m": 0, "h": 0}, 4, 10) == {"e": 0, "m": 5, "h": 5}
    assert wanted_by_fail_rate({"a": 3, "b": 1}, 4, 5) == {"a": 2, "b": 4}  # ceil(5 * .25/1), ceil(5 * .75/1)
    assert wanted_by_fail_rate({"a": 4, "b": 4}, 4, 5) == {"a": 0, "b": 0}
    _, rows = rounds(fake_params(mode="prop2diff", total_correct=6, max_trials=16), tmp_path / "r")
    got = {r.problem_id: (r.samples, r.correct, r.wanted, r.stop) for r in rows}
    # wanted: e 0 (closes after round 1), m and h ceil(6 * 1/2) = 3; m finds 6, 7 in round 2 and 9 in round 3
    assert got == {"e": (4, 4, 0, "reached"), "m": (12, 3, 3, "reached"), "h": (16, 0, 3, "capped")}


def test_total_samples_caps_the_pool_and_serves_the_most_missing_first(tmp_path, monkeypatch):
    # h right at 1 and 2 (2 of 3 wanted after round 1), m never right: m misses more, so m gets the one round left
    monkeypatch.setitem(RIGHT, "h", {1, 2})
    monkeypatch.setitem(RIGHT, "m", set())
    calls = []
    _, rows = rounds(fake_params(mode="uniform", k_correct=3, max_trials=12, total_samples=16), tmp_path / "r", calls)
    assert calls == [(["e", "h", "m"], 0), (["m"], 4)]  # 12 + 4 = 16: h would come first by id, m by what it misses
    got = {r.problem_id: (r.samples, r.correct, r.stop) for r in rows}
    assert got == {"e": (4, 4, "reached"), "h": (4, 2, "spent"), "m": (8, 0, "spent")}
    assert sum(r.samples for r in rows) <= 16
    # without the cap the same pool spends 4 + 12 + 12 = 28
    _, free = rounds(fake_params(mode="uniform", k_correct=3, max_trials=12), tmp_path / "free")
    assert sum(r.samples for r in free) == 28


def test_total_samples_below_one_round_is_an_error(tmp_path):
    with pytest.raises(RestemError, match="total_samples 8 is less than one round.*12"):
        rounds(fake_params(mode="uniform", k_correct=3, max_trials=12, total_samples=8), tmp_path / "r")
    assert not list((tmp_path / "r").glob("*.parquet"))


def test_budget_params_are_checked():
    base = {"engine": "transformers", "samples_per_problem": 4, "temperature": 1.0, "max_new_tokens": 8}
    with pytest.raises(ValidationError, match="multiple of samples_per_problem"):
        GrowParams(**base, budget={"mode": "uniform", "max_trials": 10})
    with pytest.raises(ValidationError, match="total_correct"):
        GrowParams(**base, budget={"mode": "prop2diff"})
    with pytest.raises(ValidationError, match="extra"):
        GrowParams(**base, budget={"mode": "uniform", "k_corect": 2})
    GrowParams(**base, budget={"mode": "fixed", "max_trials": 10})  # fixed ignores the round settings


def test_crash_after_round_one_resumes_without_resampling(tmp_path):
    params = fake_params(mode="uniform", k_correct=3, max_trials=12)
    folder = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        rounds(params, folder, crash_at=1)
    assert len(list(folder.glob("round-0000-*.parquet"))) == 1 and not list(folder.glob("round-0001-*"))
    calls = []
    tables, rows = rounds(params, folder, calls)
    assert [first for _, first in calls] == [4, 8]  # round 1 reused, not drawn again
    fresh_tables, fresh_rows = rounds(params, tmp_path / "fresh")
    assert rows == fresh_rows and [t.to_pylist() for t in tables] == [t.to_pylist() for t in fresh_tables]


# ------------------------------------------------------------------ real Grow runs on the tiny trained model


def _workspace(tmp_path, trained_root, name, budget):
    trained, _ = trained_root
    root = tmp_path / name
    shutil.copytree(trained / "models", root / "models")
    raw = copy.deepcopy(TINY)
    raw["grow"]["budget"] = budget
    params = Params.model_validate(raw)
    problems_stage.run(params, root)
    return root, params


UNIFORM = {"mode": "uniform", "k_correct": 3, "max_trials": 12}


def test_grow_uniform_budget_records_every_problem(tmp_path, trained_root):
    root, params = _workspace(tmp_path, trained_root, "uniform", UNIFORM)
    n = grow.run(params, 1, 0, root)
    samples = read_rows(iter_dir(1, root) / "samples.parquet", Sample)
    budget = read_rows(iter_dir(1, root) / "budget.parquet", Budget)
    assert n == len(samples) == sum(b["samples"] for b in budget)
    assert len(budget) == len(read_rows(root / "data/problems/train.parquet", Problem))
    assert len({s["sample_id"] for s in samples}) == len(samples) and len({s["seed"] for s in samples}) == len(samples)
    for b in budget:
        indices = sorted(s["sample_index"] for s in samples if s["problem_id"] == b["problem_id"])
        assert indices == list(range(b["samples"])) and b["rounds"] * 4 == b["samples"]
        assert (b["stop"] == "reached") == (b["correct"] >= 3)
        assert b["stop"] == "reached" or b["samples"] == 12
    assert {b["stop"] for b in budget} == {"reached", "capped"}  # the tiny model solves some problems, not all
    assert not (iter_dir(1, root) / ".grow-rounds").exists()
    # the fixed-K samples are the first round of the budgeted run: same seeds, same ids
    fixed_root, fixed_params = _workspace(tmp_path, trained_root, "fixed", {"mode": "fixed"})
    grow.run(fixed_params, 1, 0, fixed_root)
    fixed = read_rows(iter_dir(1, fixed_root) / "samples.parquet", Sample)
    assert {s["sample_id"] for s in fixed} == {s["sample_id"] for s in samples if s["sample_index"] < 4}
    assert {b["stop"] for b in read_rows(iter_dir(1, fixed_root) / "budget.parquet", Budget)} == {"fixed"}


def test_grow_budget_crash_after_round_one_resumes_to_identical_bytes(tmp_path, trained_root, monkeypatch):
    root_a, params = _workspace(tmp_path, trained_root, "uninterrupted", UNIFORM)
    grow.run(params, 1, 0, root_a)
    expected = {name: (iter_dir(1, root_a) / name).read_bytes() for name in ("samples.parquet", "budget.parquet")}

    root_b, _ = _workspace(tmp_path, trained_root, "crashed", UNIFORM)
    real_sample = grow.sample

    def crash_after_round_one(*args, **kwargs):
        if kwargs["first_index"] > 0:
            raise RuntimeError("simulated crash in round 2")
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(grow, "sample", crash_after_round_one)
    with pytest.raises(RuntimeError, match="simulated crash"):
        grow.run(params, 1, 0, root_b)
    assert len(list((iter_dir(1, root_b) / ".grow-rounds").glob("round-0000-*.parquet"))) == 1
    assert not (iter_dir(1, root_b) / "samples.parquet").exists()
    monkeypatch.setattr(grow, "sample", real_sample)
    grow.run(params, 1, 0, root_b)
    for name, data in expected.items():
        assert (iter_dir(1, root_b) / name).read_bytes() == data, name


def test_grow_prop2diff_budget(tmp_path, trained_root):
    budget = {"mode": "prop2diff", "total_correct": 30, "max_trials": 12}
    root, params = _workspace(tmp_path, trained_root, "p2d", budget)
    grow.run(params, 1, 0, root)
    rows = read_rows(iter_dir(1, root) / "budget.parquet", Budget)
    samples = read_rows(iter_dir(1, root) / "samples.parquet", Sample)
    assert sum(r["samples"] for r in rows) == len(samples)
    first = {}  # first-round correct counts, from the samples themselves (index < 4) and the verifier
    from restem.verifiers.batch import load_problems, score_samples

    for s in score_samples("arithmetic", [s for s in samples if s["sample_index"] < 4], load_problems(root, "train")):
        first[s.problem_id] = first.get(s.problem_id, 0) + bool(s.correct)
    assert {r["problem_id"]: r["wanted"] for r in rows} == wanted_by_fail_rate(first, 4, 30)
    for r in rows:
        assert r["stop"] == ("reached" if r["correct"] >= r["wanted"] else "capped")
        assert r["wanted"] == 0 or r["samples"] > 4 or r["correct"] >= r["wanted"]
