"""The original ReST on the tiny model: a learned reward model, rising thresholds, warm-started steps."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from pydantic import ValidationError

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows
from restem.schemas.params import Params, load_params
from restem.schemas.tables import Kept, Score
from tests.conftest import write_params


def rest_raw(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["score"]["reward"] = "model"
    # Quantile thresholds: the tiny reward model's scores sit in a narrow band.
    raw["filter"] = {"mode": "threshold", "max_per_problem": 4, "dedup": "exact", "threshold": 0.3,
                     "threshold_kind": "quantile"}
    raw["loop"] = {"iterations": {"1": {"prev": 0, "init": 0}},
                   "steps": {"1b": {"iteration": 1, "threshold": 0.5, "init": 1}}}
    return raw


def test_threshold_schedule_must_rise(tiny_raw, tmp_path):
    raw = rest_raw(tiny_raw)
    raw["loop"]["steps"]["1c"] = {"iteration": 1, "threshold": 0.45, "init": "1b"}
    with pytest.raises(ValidationError, match=r"thresholds must rise along iteration 1's steps: '1b' has 0.5, "
                                              r"then '1c' has 0.45"):
        Params.model_validate(raw)
    # The same through the params file: a RestemError that names the file.
    with pytest.raises(RestemError, match="params.yaml: invalid params"):
        load_params(write_params(tmp_path / "params.yaml", raw))
    # The first step must also be above the iteration's own tau.
    raw = rest_raw(tiny_raw)
    raw["loop"]["iterations"]["1"]["threshold"] = 0.6
    with pytest.raises(ValidationError, match="'1' has 0.6, then '1b' has 0.5"):
        Params.model_validate(raw)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["filter"].update(mode="correct"), "loop.steps needs filter.mode `threshold`"),
    (lambda r: r["loop"]["steps"].update({"2b": {"iteration": 2, "threshold": 0.9, "init": 1}}),
     "names no iteration in the loop"),
    (lambda r: r["loop"]["steps"].update({"1c": {"iteration": 2, "threshold": 0.9, "init": "1b"}}),
     "the key names iteration 1"),
    (lambda r: r["loop"]["steps"].update({"1c": {"iteration": 1, "threshold": 0.9, "init": "1d"}}),
     "names no iteration or step"),
    (lambda r: r["loop"]["steps"].update({"b1": {"iteration": 1, "threshold": 0.9, "init": 1}}),
     "must be an iteration number and letters"),
    (lambda r: r.pop("reward_model"), "the `reward_model` section is missing"),
])
def test_bad_step_definitions(tiny_raw, change, message):
    raw = rest_raw(tiny_raw)
    change(raw)
    with pytest.raises(ValidationError, match=message):
        Params.model_validate(raw)


def test_models_are_ordered_with_steps(tiny_raw):
    raw = rest_raw(tiny_raw)
    raw["loop"]["steps"]["1c"] = {"iteration": 1, "threshold": 0.7, "init": "1b"}
    raw["loop"]["iterations"]["2"] = {"prev": "1c", "init": "1c"}
    assert Params.model_validate(raw).loop.models() == ["0", "1", "1b", "1c", "2"]


@pytest.fixture(scope="module")
def rest_run(trained_root, tmp_path_factory):
    """The tiny ReST loop: reward model, grow, score by the reward model, filter at tau 0.3, improve,
    then step 1b: filter the same samples at quantile 0.5 and improve from iteration 1's model."""
    from restem.stages import filter as filter_stage
    from restem.stages import grow, improve, reward_model, score

    src, _ = trained_root
    root = tmp_path_factory.mktemp("rest")
    shutil.copytree(src, root, dirs_exist_ok=True)
    from tests.conftest import TINY

    params = Params.model_validate(rest_raw(TINY))
    summary = reward_model.run(params, root)
    grow.run(params, 1, 0, root)
    score.run(params, 1, root)
    filter_stage.run(params, 1, root)
    improve.run(params, 1, 0, root)
    filter_stage.run(params, "1b", root)
    improve.run(params, "1b", 1, root)
    return root, params, summary


def test_reward_model_trains_and_is_measured(rest_run):
    root, _, summary = rest_run
    assert summary["used"] and summary["loss_last"] < summary["loss_first"]
    assert 0 <= summary["holdout_accuracy"] <= 1 and summary["holdout_samples"] > 0
    stored = json.loads((root / "metrics" / "reward.json").read_text())
    assert stored == summary
    assert (root / "models" / "reward" / "config.json").is_file()
    assert (root / "data" / "reward" / "scores.parquet").is_file()


def test_reward_model_scores_are_deterministic_and_keep_the_verdict(rest_run):
    from restem.stages import score

    root, params, _ = rest_run
    path = root / "data" / "iter1" / "scores.parquet"
    first = path.read_bytes()
    rows = read_rows(path, Score)
    assert all(r["reward_model"] for r in rows)
    assert all(0.0 <= r["reward"] <= 1.0 for r in rows)
    assert {r["verdict"] for r in rows} <= {"correct", "incorrect"}  # the verifier's verdict stays
    assert len({r["reward"] for r in rows}) > 3  # a continuous score, not the verifier's 0/1
    score.run(params, 1, root)
    assert path.read_bytes() == first


def test_step_filters_with_its_higher_threshold(rest_run):
    root, _, _ = rest_run
    kept1 = read_rows(root / "data" / "iter1" / "kept.parquet", Kept)
    kept1b = read_rows(root / "data" / "iter1b" / "kept.parquet", Kept)
    tau1 = json.loads((root / "metrics" / "filter" / "iter1.json").read_text())["threshold"]
    report = json.loads((root / "metrics" / "filter" / "iter1b.json").read_text())
    tau1b = report["threshold"]
    assert tau1b > tau1  # quantile 0.5 of the same rewards is above quantile 0.3
    assert kept1b and len(kept1b) < len(kept1)
    assert all(k["reward"] >= tau1b and k["threshold"] == tau1b for k in kept1b)
    assert all(k["reward"] >= tau1 for k in kept1)
    # The same samples, a higher bar: with a cap that does not bind, the step's set is a subset.
    assert {k["sample_id"] for k in kept1b} <= {k["sample_id"] for k in kept1}
    assert report["kept"] == len(kept1b)
    assert "reward_model_agreement" in report and report["kept_verifier_incorrect"] >= 0


def test_warm_started_step_starts_from_the_previous_model(rest_run):
    import torch

    from restem.stages import improve
    from restem.training.modeling import load_policy, model_hash, read_meta

    root, params, _ = rest_run
    meta = read_meta(root / "models" / "iter1b")
    assert meta.parent == model_hash(root / "models" / "iter1")
    assert meta.parent != model_hash(root / "models" / "iter0")
    assert meta.iteration == "1b"
    # The same step started from the base gives other weights: the start really matters.
    control = root / "control"
    shutil.copytree(root, control, ignore=shutil.ignore_patterns("control"))
    improve.run(params, "1b", 0, control)
    warm, _ = load_policy(root / "models" / "iter1b")
    cold, _ = load_policy(control / "models" / "iter1b")
    assert any(not torch.equal(a, b) for a, b in zip(warm.state_dict().values(), cold.state_dict().values()))


def test_evaluate_reports_every_step(rest_run):
    from restem.stages import evaluate

    root, params, _ = rest_run
    summary = evaluate.run(params, root)
    names = sorted(p.name for p in (root / "metrics" / "iterations").glob("iter*.json"))
    assert names == ["iter0.json", "iter1.json", "iter1b.json"]
    assert json.loads((root / "metrics" / "iterations" / "iter1b.json").read_text())["iteration"] == "1b"
    assert summary["steps"] == 1 and summary["iterations"] == 1


def test_rule_names_the_quantile_of_each_step(rest_run):
    root, _, _ = rest_run
    rule1 = read_rows(root / "data" / "iter1" / "kept.parquet", Kept)[0]["rule"]
    rule1b = read_rows(root / "data" / "iter1b" / "kept.parquet", Kept)[0]["rule"]
    assert "(q0.3)" in rule1 and "(q0.5)" in rule1b


# ------------------------------------------------------------------ steps in restem sql, the audits and export


def _evaluated(rest_run):
    from restem.stages import evaluate

    root, params, _ = rest_run
    if not (root / "metrics" / "iterations" / "iter1b.json").is_file():
        evaluate.run(params, root)
    return root


def test_sql_views_tell_a_step_from_its_iteration(rest_run):
    from restem.query.sql import connect, run_query

    root = _evaluated(rest_run)
    kept1b = {k["sample_id"] for k in read_rows(root / "data" / "iter1b" / "kept.parquet", Kept)}
    kept1 = {k["sample_id"] for k in read_rows(root / "data" / "iter1" / "kept.parquet", Kept)}
    con = connect(root)
    q = lambda sql: run_query(con, sql).to_pylist()  # noqa: E731
    assert q("SELECT ref, iteration, count(*) AS n FROM kept GROUP BY ALL ORDER BY ref") == [
        {"ref": "1", "iteration": 1, "n": len(kept1)}, {"ref": "1b", "iteration": 1, "n": len(kept1b)}]
    assert [r["ref"] for r in q("SELECT DISTINCT ref FROM rejected ORDER BY ref")] == ["1", "1b"]
    models = q("SELECT iteration, ref, parent, model_hash FROM models ORDER BY iteration, ref")
    assert [(m["iteration"], m["ref"]) for m in models] == [(0, "0"), (1, "1"), (1, "1b")]
    assert models[2]["parent"] == models[1]["model_hash"]
    assert {(r["iteration"], r["ref"]) for r in q("SELECT DISTINCT iteration, ref FROM metrics")} == {
        (0, "0"), (1, "1"), (1, "1b")}
    evals = q("SELECT ref, count(*) AS n FROM samples WHERE purpose = 'eval' GROUP BY 1 ORDER BY 1")
    assert [r["ref"] for r in evals] == ["0", "1", "1b"] and len({r["n"] for r in evals}) == 1
    # graded: one row per grow sample; `kept` is its own iteration's decision, kept_by every filter's
    graded = q("SELECT sample_id, kept, filter_reason, kept_by FROM graded WHERE purpose = 'grow'")
    assert len(graded) == len({g["sample_id"] for g in graded}) == 96
    for g in graded:
        assert g["kept"] == (g["sample_id"] in kept1) and (g["filter_reason"] is None) == g["kept"]
        assert g["kept_by"] == [r for r, ids in (("1", kept1), ("1b", kept1b)) if g["sample_id"] in ids]
    con.close()


def test_audits_report_each_step_apart(rest_run):
    from restem.query.audits import run_audit
    from restem.query.plots import write_plot_data
    from restem.query.sql import connect

    root = _evaluated(rest_run)
    kept1b = read_rows(root / "data" / "iter1b" / "kept.parquet", Kept)
    report = json.loads((root / "metrics" / "filter" / "iter1b.json").read_text())
    con = connect(root)
    rows = run_audit(con, "filter").table.to_pylist()
    step = {r["outcome"]: r["samples"] for r in rows if r["ref"] == "1b"}
    assert step["kept"] == len(kept1b) and sum(step.values()) == report["samples"]
    assert {r["ref"] for r in rows} == {"1", "1b"}  # not one pooled iteration 1
    precision = {r["ref"]: r for r in run_audit(con, "precision").table.to_pylist()}
    assert precision["1b"]["kept"] == len(kept1b) and precision["1b"]["kept_precision"] == report["kept_precision"]
    coverage = {(r["ref"], r["purpose"]) for r in run_audit(con, "coverage").table.to_pylist()}
    assert {("1", "eval"), ("1b", "eval"), ("1", "grow")} <= coverage
    wrong = {(r["ref"], r["purpose"]): r for r in run_audit(con, "wrong-reasoning").table.to_pylist()}
    assert wrong[("1b", "grow")]["right_answers"] == wrong[("1", "grow")]["right_answers"]  # the same samples
    assert wrong[("1b", "grow")]["kept"] <= len(kept1b)
    con.close()
    write_plot_data(root)
    lines = (root / "metrics" / "plots" / "filter.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["iteration", "1", "1b"]
    assert lines[2].split(",")[-1] == str(len(kept1b))


def test_export_a_step(rest_run, tmp_path):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner
    import typer

    from restem.publish.export import export_command

    root = _evaluated(rest_run)
    kept1b = sorted(k["sample_id"] for k in read_rows(root / "data" / "iter1b" / "kept.parquet", Kept))
    app = typer.Typer()
    app.command("export")(export_command)
    app.command("other")(lambda: None)
    runner = CliRunner()
    res = runner.invoke(app, ["export", "--root", str(root), "-i", "1b", "-o", str(tmp_path / "step")])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(tmp_path / "step" / "prompt_completion" / "train-00000-of-00001.parquet").to_pylist()
    assert sorted(r["sample_id"] for r in rows) == kept1b and {r["iteration"] for r in rows} == {1}
    card = (tmp_path / "step" / "README.md").read_text()
    assert "kept samples, iteration 1b" in card and "(q0.5)" in card and "(q0.3)" not in card
    assert "`data/iter1b/kept.parquet`" in card and "`models/iter1b`" in card
    bad = runner.invoke(app, ["export", "--root", str(root), "-i", "1c", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "iteration 1c: data/iter1c/kept.parquet not found" in bad.output
    assert "[1, 1b]" in bad.output and not (tmp_path / "x").exists()
