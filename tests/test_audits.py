"""Each audit on the hand-made workspace of tests/test_sql.py, whose answers are known (see GROW there)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows, write_rows
from restem.schemas.tables import Sample, Score
from restem.query.audits import AUDITS, audit_command, audit_sql, run_audit
from restem.query.plots import write_plot_data
from restem.query.sql import connect, run_query
from restem.stats import auc
from tests.test_sql import make_workspace


@pytest.fixture
def workspace(tmp_path) -> Path:
    return make_workspace(tmp_path / "ws")


def audit(root: Path, name: str, listing: bool = False):
    con = connect(root)
    try:
        return run_audit(con, name, listing)
    finally:
        con.close()


def rows_by(result, *keys) -> dict:
    return {tuple(r[k] for k in keys): r for r in result.table.to_pylist()}


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("audit")(audit_command)
    app.command("other")(lambda: None)
    return app


def test_wrong_reasoning_rates_per_iteration_and_among_kept(workspace):
    rows = rows_by(audit(workspace, "wrong-reasoning"), "iteration", "purpose")
    it1, it2 = rows[(1, "grow")], rows[(2, "grow")]
    # iteration 1: s1, s2, s3 right; s2's steps are wrong (scores.steps_valid); all three kept
    assert (it1["right_answers"], it1["checkable"], it1["wrong_reasoning"]) == (3, 3, 1)
    assert it1["rate"] == pytest.approx(1 / 3, abs=1e-4) and (it1["kept"], it1["kept_wrong_reasoning"]) == (3, 1)
    # iteration 2: b1's verifier left steps_valid NULL; its annotation <<2*3=7>> is caught from the text
    assert (it2["right_answers"], it2["checkable"], it2["wrong_reasoning"]) == (3, 3, 1)
    assert (it2["kept"], it2["kept_wrong_reasoning"], it2["kept_rate"]) == (2, 1, 0.5)
    assert rows[(1, "eval")]["right_answers"] == 2 and rows[(1, "eval")]["wrong_reasoning"] == 0


def test_wrong_reasoning_list_names_the_samples_and_steps(workspace):
    listing = audit(workspace, "wrong-reasoning", listing=True).table.to_pylist()
    assert sorted(r["sample_id"] for r in listing) == ["b1", "s2"]
    b1 = next(r for r in listing if r["sample_id"] == "b1")
    assert "2*3" in b1["wrong_steps"] and "6" in b1["wrong_steps"]


def test_coverage(workspace):
    rows = rows_by(audit(workspace, "coverage"), "iteration", "purpose")
    for it in (1, 2):  # P1 2/2 right, P2 1/2, P3 0/2
        r = rows[(it, "grow")]
        assert (r["problems"], r["k"], r["never_solved"], r["solved_once"]) == (3, 2, 1, 1)
        assert r["pass_at_1"] == pytest.approx(0.5) and r["pass_at_k"] == pytest.approx(2 / 3, abs=1e-4)
    overall = rows[(None, "grow (all iterations)")]
    assert (overall["k"], overall["never_solved"], overall["solved_once"]) == (4, 1, 0)
    # the greedy eval row (temperature 0) is not one of the K samples
    ev = rows[(1, "eval")]
    assert (ev["k"], ev["pass_at_1"], ev["pass_at_k"]) == (2, 0.5, 1.0)


def test_coverage_list(workspace):
    listing = audit(workspace, "coverage", listing=True).table.to_pylist()
    assert [(r["problem_id"], r["status"], r["prompt"]) for r in listing] == [("P3", "never solved", "prompt P3")]


def test_diversity(workspace):
    rows = rows_by(audit(workspace, "diversity"), "iteration", "purpose")
    # iteration 2: P1 has one completion twice (one path), P2 two, P3 two -> means 5/3; P1 is the one-path problem
    it2 = rows[(2, "grow")]
    assert it2["distinct_completions"] == pytest.approx(5 / 3, abs=1e-3)
    assert it2["share_one_path"] == pytest.approx(1 / 3, abs=1e-4)
    it1 = rows[(1, "grow")]
    # P2's two completions differ only in the final answer: one path (2*3=6) for two completions
    assert it1["distinct_completions"] == 2 and it1["distinct_paths"] == pytest.approx(5 / 3, abs=1e-3)
    # correct paths: P1 two (s1, s2 differ), P2 one, P3 none
    assert it1["distinct_correct_paths"] == pytest.approx(1.0)


def test_filter_report(workspace):
    rows = rows_by(audit(workspace, "filter"), "iteration", "outcome")
    assert {k: v["samples"] for k, v in rows.items()} == {
        (1, "kept"): 3, (1, "dropped: incorrect"): 3,
        (2, "kept"): 2, (2, "dropped: duplicate"): 1, (2, "dropped: incorrect"): 3}
    assert rows[(2, "kept")]["share"] == pytest.approx(2 / 6, abs=1e-4)


def _cut_off(root: Path, folder: str, ids: set[str]) -> None:
    """Mark samples of one samples file as truncated (finish_reason length)."""
    path = root / folder / "samples.parquet"
    rows = [{**r, "finish_reason": "length" if r["sample_id"] in ids else r["finish_reason"]}
            for r in read_rows(path, Sample)]
    write_rows(path, Sample, [Sample(**r) for r in rows])


def test_truncation_per_iteration_among_right_and_kept_answers(workspace):
    # s2 (right, kept: as with filter.keep_truncated) and s5 (wrong) of iteration 1; e2 (wrong) of its evaluation.
    _cut_off(workspace, "data/iter1", {"s2", "s5"})
    _cut_off(workspace, "data/eval/iter1", {"e2"})
    rows = rows_by(audit(workspace, "truncation"), "iteration", "purpose")
    pick = ("samples", "truncated", "share", "correct", "truncated_correct", "truncated_share_of_correct",
            "kept_truncated")
    assert {k: tuple(v[c] for c in pick) for k, v in rows.items()} == {
        (1, "grow"): (6, 2, 0.3333, 3, 1, 0.3333, 1),
        (1, "eval"): (3, 1, 0.3333, 2, 0, 0.0, 0),
        (2, "grow"): (6, 0, 0.0, 3, 0, 0.0, 0)}
    listed = audit(workspace, "truncation", listing=True).table.to_pylist()
    assert [(r["sample_id"], r["correct"], r["kept"]) for r in listed] == [
        ("e2", False, None), ("s2", True, True), ("s5", False, False)]
    assert listed[1]["ending"] == "1+2+0=4;3"


def test_precision_of_the_kept_samples(workspace):
    rows = rows_by(audit(workspace, "precision"), "iteration")
    assert {k[0]: (v["kept"], v["kept_precision"]) for k, v in rows.items()} == {1: (3, 1.0), 2: (2, 1.0)}
    # A kept sample the verifier calls wrong (a label-free filter's mistake) lowers it.
    path = workspace / "data/iter2/scores.parquet"
    scores = read_rows(path, Score)
    for s in scores:
        if s["sample_id"] == "a1":
            s.update(correct=False, reward=0.0, verdict="incorrect")
    write_rows(path, Score, scores)
    rows = rows_by(audit(workspace, "precision"), "iteration")
    assert rows[(2,)]["kept_precision"] == 0.5 and rows[(1,)]["kept_precision"] == 1.0
    write_plot_data(workspace)
    rates = list(csv.DictReader((workspace / "metrics/plots/audit_rates.csv").open()))
    assert [float(r["kept_precision"]) for r in rates] == [1.0, 0.5]


def test_reward_model_absent_is_said_cleanly(workspace):
    result = audit(workspace, "reward-model")
    assert result.table.num_rows == 0 and "rm:" in result.note
    res = CliRunner().invoke(cli(), ["audit", "reward-model", "--root", str(workspace)])
    assert res.exit_code == 0 and "no reward-model scores" in res.output


def test_reward_model_against_verifier(workspace):
    path = workspace / "data/iter1/scores.parquet"
    scores = read_rows(path, Score)
    rm = {"s1": 0.9, "s2": 0.8, "s3": 0.4, "s4": 0.5, "s5": 0.1, "s6": 0.2}
    extra = [Score(sample_id=s["sample_id"], problem_id=s["problem_id"], iteration=1, verifier="rm:toy",
                   reward=rm[s["sample_id"]], correct=None, verdict="unverifiable", extracted=None, steps_valid=None)
             for s in scores]
    write_rows(path, Score, scores + extra)
    row = rows_by(audit(workspace, "reward-model"), "iteration", "reward_model")[(1, "rm:toy")]
    # positives s1, s2, s3 against negatives s4, s5, s6: 8 of 9 pairs ordered right
    assert row["auc"] == pytest.approx(8 / 9, abs=1e-4)
    # best-of-2 per problem: P1 s1 (right), P2 s4 (wrong, 0.5 > 0.4), P3 wrong
    assert row["best_of_n"] == pytest.approx(1 / 3, abs=1e-4) and row["pass_at_1"] == 0.5
    # the reward-model rows do not leak into the verdict audits
    cov = rows_by(audit(workspace, "coverage"), "iteration", "purpose")[(1, "grow")]
    assert cov["k"] == 2
    top = audit(workspace, "reward-model", listing=True).table.to_pylist()[0]
    assert (top["sample_id"], top["correct"]) == ("s4", False)


def _pairwise_auc(scores, labels) -> float:
    """AUC by its definition: over every (positive, negative) pair, 1 if the positive scores higher, 1/2 if tied."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_auc_counts_ties_half():
    import random

    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 30)
        scores = [rng.choice([0.1, 0.2, 0.5, 0.5, 0.9]) for _ in range(n)]  # many ties
        labels = [rng.random() < 0.5 for _ in range(n)]
        expected = _pairwise_auc(scores, labels) if 0 < sum(labels) < n else None
        assert auc(scores, labels) == (expected if expected is None else pytest.approx(expected, abs=1e-12))
    assert auc([0.3, 0.3], [1, 1]) is None and auc([], []) is None
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        auc([0.1, 0.2], [1])


def test_reward_model_audit_auc_is_the_python_auc_with_ties(workspace):
    # iteration 1: s1..s3 right, s4..s6 wrong (GROW); the reward model ties across and within the classes
    path = workspace / "data/iter1/scores.parquet"
    scores = read_rows(path, Score)
    rm = {"s1": 0.7, "s2": 0.3, "s3": 0.3, "s4": 0.3, "s5": 0.7, "s6": 0.1}
    extra = [Score(sample_id=s["sample_id"], problem_id=s["problem_id"], iteration=1, verifier="rm:ties",
                   reward=rm[s["sample_id"]], correct=None, verdict="unverifiable", extracted=None, steps_valid=None)
             for s in scores]
    write_rows(path, Score, scores + extra)
    row = rows_by(audit(workspace, "reward-model"), "iteration", "reward_model")[(1, "rm:ties")]
    rm_scores, labels = [rm[s["sample_id"]] for s in scores], [s["correct"] for s in scores]
    python = auc(rm_scores, labels)
    assert python == pytest.approx(5.5 / 9) == pytest.approx(_pairwise_auc(rm_scores, labels))
    assert row["auc"] == round(python, 4)
    # the function the audit calls is there in `restem sql` too; NULL pairs are left out, one class gives NULL
    con = connect(workspace)
    got = run_query(con, "SELECT auc([0.7, 0.3, 0.3, 0.3, 0.7, 0.1, NULL], "
                         "[true, true, true, false, false, false, true]) AS a, "
                         "auc([0.5, 0.6], [true, true]) AS one_class").to_pylist()[0]
    assert got["a"] == pytest.approx(python) and got["one_class"] is None


def test_every_audit_sql_runs_unchanged_in_restem_sql(workspace):
    con = connect(workspace)
    for name in AUDITS:
        run_query(con, audit_sql(name))  # what --show-sql prints is what runs


def test_cli_show_sql_unknown_name_and_formats(workspace):
    runner = CliRunner()
    res = runner.invoke(cli(), ["audit", "coverage", "--show-sql"])
    assert res.exit_code == 0 and "pass_at_k" in res.stdout and "FROM scores" in res.stdout
    res = runner.invoke(cli(), ["audit", "nonsense", "--root", str(workspace)])
    assert res.exit_code == 2 and all(name in res.output for name in AUDITS)
    res = runner.invoke(cli(), ["audit", "filter", "--root", str(workspace), "--format", "csv"])
    assert res.exit_code == 0 and res.stdout.splitlines()[0] == "iteration,ref,outcome,samples,share"
    with pytest.raises(RestemError, match="no --list"):
        audit_sql("filter", listing=True)


def test_write_plot_data(workspace):
    files = write_plot_data(workspace)
    assert sorted(p.name for p in files) == ["accuracy.csv", "audit_rates.csv", "filter.csv", "solve_rates.csv"]
    read = lambda name: list(csv.DictReader((workspace / "metrics/plots" / name).open()))  # noqa: E731
    filt = read("filter.csv")
    assert filt[1] == {"iteration": "2", "dropped_duplicate": "1", "dropped_incorrect": "3", "kept": "2"}
    rates = {(r["series"], r["solve_rate"]): r["problems"] for r in read("solve_rates.csv")}
    assert rates == {(f"iter{i}", b): "1" for i in (1, 2) for b in ("0.0", "0.5", "1.0")}
    assert [(r["iteration"], r["series"], r["value"]) for r in read("accuracy.csv")] == [
        ("1", "in_dist pass@1", "0.25"), ("2", "in_dist pass@1", "0.5")]
    audit_rates = read("audit_rates.csv")
    assert [r["iteration"] for r in audit_rates] == ["1", "2"]
    assert float(audit_rates[1]["kept_wrong_reasoning_rate"]) == 0.5 and float(audit_rates[0]["pass_at_1"]) == 0.5
