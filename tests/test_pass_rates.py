"""Pass rates as data: the per-problem table (restem.stats.pass_rates), the filter's pass-rate band, the score
stage writing `pass_rates.parquet`, and the `pass_rates` SQL view, on hand-made tables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from restem.filtering import pass_rate_band, rule_name, select
from restem.schemas.io import read_rows, write_rows
from restem.schemas.params import FilterParams
from restem.schemas.tables import Kept, PassRate, Rejected, Sample, Score
from restem.stats import pass_rates

from tests.test_filter_modes import table
from tests.test_sql import make_workspace, q


# a: every sample right; b: 2 of 4 (one error); c: none right, answers tie 7/8 (7 first); d: nothing extracted
ROWS = [
    ("a", 0, "a0", 1.0, True, "5"), ("a", 1, "a1", 1.0, True, "5"),
    ("b", 0, "b0", 0.0, False, "3"), ("b", 1, "b1", 1.0, True, "4"), ("b", 2, "b2", 1.0, True, "4"),
    ("b", 3, "b3", 0.0, None, None, "error"),
    ("c", 0, "c0", 0.0, False, "7"), ("c", 1, "c1", 0.0, False, "8"), ("c", 2, "c2", 0.0, False, "8"),
    ("c", 3, "c3", 0.0, False, "7"),
    ("d", 0, "d0", 0.0, None, None, "unverifiable"),
]


def rates_by_problem(samples, scores):
    return {r["problem_id"]: r for r in pass_rates(samples, scores)}


def test_pass_rate_rows_count_samples_correct_and_majority():
    samples, scores = table(ROWS)
    rates = rates_by_problem(samples, scores)
    assert {p: (r["samples"], r["graded"], r["correct"], r["pass_rate"]) for p, r in rates.items()} == {
        "a": (2, 2, 2, 1.0), "b": (4, 3, 2, 0.5), "c": (4, 4, 0, 0.0), "d": (1, 0, 0, 0.0)}
    assert (rates["b"]["majority_answer"], rates["b"]["majority_count"], rates["b"]["majority_share"]) == ("4", 2, 0.5)
    assert rates["c"]["majority_answer"] == "7"  # a 2-2 tie goes to the earliest sample's answer
    assert (rates["d"]["majority_answer"], rates["d"]["majority_count"], rates["d"]["majority_share"]) == (None, 0, 0.0)
    assert all(PassRate(**r) for r in rates.values())  # the rows fit the table


def test_default_band_changes_nothing():
    samples, scores = table(ROWS)
    f = FilterParams(mode="correct", max_per_problem=10, dedup="none")
    inside, dropped = pass_rate_band(samples, scores, f, pass_rates(samples, scores))
    assert inside == samples and dropped == []
    assert rule_name(f) == "correct;cap=10;dedup=none;valid_steps=false"  # kept rows' rule as before the band


def band_filter(low: float, high: float, mode: str = "correct"):
    samples, scores = table(ROWS)
    f = FilterParams(mode=mode, max_per_problem=10, dedup="none", pass_rate={"low": low, "high": high})
    inside, banded = pass_rate_band(samples, scores, f, pass_rates(samples, scores))
    kept, rejected = select(inside, scores, f)
    return f, kept, rejected + banded


def test_band_below_one_drops_problems_every_sample_solves():
    f, kept, rejected = band_filter(0.0, 0.99)
    assert sorted(k.sample_id for k in kept) == ["b-1", "b-2"]
    reasons = {r.sample_id: r.filter_reason for r in rejected}
    assert reasons["a-0"] == reasons["a-1"] == "pass_rate_band"
    assert reasons["b-0"] == "incorrect" and reasons["c-0"] == "incorrect" and reasons["b-3"] == "error"
    assert len(kept) + len(rejected) == len(ROWS)  # every sample is accounted for once
    assert {k.rule for k in kept} == {"correct;cap=10;dedup=none;valid_steps=false;pass_rate=[0,0.99]"}


def test_band_above_zero_drops_unsolved_problems_whatever_their_other_reason():
    _, kept, rejected = band_filter(0.25, 1.0)
    assert sorted(k.sample_id for k in kept) == ["a-0", "a-1", "b-1", "b-2"]
    reasons = {r.sample_id: r.filter_reason for r in rejected}
    assert {reasons[f"c-{i}"] for i in range(4)} == {"pass_rate_band"} and reasons["d-0"] == "pass_rate_band"
    assert reasons["b-0"] == "incorrect"  # inside the band: the mode decides


def test_band_params_are_checked():
    with pytest.raises(ValidationError, match="must not exceed"):
        FilterParams(mode="correct", max_per_problem=2, dedup="none", pass_rate={"low": 0.8, "high": 0.2})
    with pytest.raises(ValidationError, match="label-free"):
        FilterParams(mode="majority", max_per_problem=2, dedup="none", pass_rate={"low": 0.0, "high": 0.9})
    with pytest.raises(ValidationError, match="extra"):
        FilterParams(mode="correct", max_per_problem=2, dedup="none", pass_rate={"lo": 0.1})
    FilterParams(mode="majority", max_per_problem=2, dedup="none", pass_rate={"low": 0.0, "high": 1.0})


def _sample_rows(samples, scores):
    """The hand-made dicts as full Sample and Score rows."""
    sample_rows = [Sample(sample_id=s["sample_id"], problem_id=s["problem_id"], iteration=1, purpose="grow",
                          policy="pol", engine="test", sample_index=s["sample_index"], seed=0, temperature=1.0,
                          prompt=s["prompt"], completion=s["completion"], finish_reason="stop", prompt_tokens=1,
                          completion_tokens=1) for s in samples]
    score_rows = [Score(sample_id=s["sample_id"], problem_id=s["sample_id"][0], iteration=1, verifier="v 1",
                        reward=s["reward"], correct=s["correct"], verdict=s["verdict"], extracted=s["extracted"],
                        steps_valid=s["steps_valid"]) for s in scores]
    return sample_rows, score_rows


def test_filter_stage_applies_band_and_writes_reasons(tmp_path, tiny_raw):
    from restem.schemas.params import Params
    from restem.stages import filter as filter_stage

    samples, scores = table(ROWS)
    sample_rows, score_rows = _sample_rows(samples, scores)
    write_rows(tmp_path / "data/iter1/samples.parquet", Sample, sample_rows)
    write_rows(tmp_path / "data/iter1/scores.parquet", Score, score_rows)
    tiny_raw["filter"]["pass_rate"] = {"low": 0.0, "high": 0.75}
    tiny_raw["filter"]["max_per_problem"] = 10
    counts = filter_stage.run(Params.model_validate(tiny_raw), 1, tmp_path)
    assert counts["pass_rate_band"] == 2 and counts["kept"] == 2
    rejected = read_rows(tmp_path / "data/iter1/rejected.parquet", Rejected)
    assert {r["sample_id"] for r in rejected if r["filter_reason"] == "pass_rate_band"} == {"a-0", "a-1"}
    assert {k["problem_id"] for k in read_rows(tmp_path / "data/iter1/kept.parquet", Kept)} == {"b"}


def test_pass_rates_view_in_sql(tmp_path):
    root = make_workspace(tmp_path / "ws", with_eval=False)
    for it in (1, 2):
        samples = read_rows(root / f"data/iter{it}/samples.parquet", Sample)
        scores = read_rows(root / f"data/iter{it}/scores.parquet", Score)
        write_rows(root / f"data/iter{it}/pass_rates.parquet", PassRate, pass_rates(samples, scores))
    rows = q(root, "SELECT ref, problem_id, samples, correct, pass_rate, majority_answer FROM pass_rates "
                   "ORDER BY ref, problem_id")
    # tests/test_sql.py GROW: P1 2/2 both iterations, P2 1/2, P3 0/2
    assert [(r["ref"], r["problem_id"], r["samples"], r["correct"], r["pass_rate"]) for r in rows] == [
        ("1", "P1", 2, 2, 1.0), ("1", "P2", 2, 1, 0.5), ("1", "P3", 2, 0, 0.0),
        ("2", "P1", 2, 2, 1.0), ("2", "P2", 2, 1, 0.5), ("2", "P3", 2, 0, 0.0)]
    joined = q(root, "SELECT count(*) n FROM graded g JOIN pass_rates p USING (problem_id, ref) "
                     "WHERE p.pass_rate = 1 AND g.kept")
    assert joined == [{"n": 3}]  # s1, s2, a1 (a2 was a duplicate)
    assert q(root, "SELECT count(*) n FROM budget") == [{"n": 0}]  # no Grow budget files: an empty view


def test_export_carries_each_rows_pass_rate(tmp_path):
    import pyarrow.parquet as pq

    from restem.publish.export import run as export
    from restem.publish.selection import Selection

    root = make_workspace(tmp_path / "ws", with_eval=False)
    for it in (1, 2):
        samples = read_rows(root / f"data/iter{it}/samples.parquet", Sample)
        scores = read_rows(root / f"data/iter{it}/scores.parquet", Score)
        write_rows(root / f"data/iter{it}/pass_rates.parquet", PassRate, pass_rates(samples, scores))
    export(root, tmp_path / "out", Selection(iterations=("1", "2")))
    rows = pq.read_table(next((tmp_path / "out/prompt_completion").glob("train-*.parquet"))).to_pylist()
    assert {r["sample_id"]: r["pass_rate"] for r in rows} == {"s1": 1.0, "s2": 1.0, "s3": 0.5, "a1": 1.0, "b1": 0.5}
    assert "`pass_rate` (share of the problem's samples" in (tmp_path / "out/README.md").read_text()
