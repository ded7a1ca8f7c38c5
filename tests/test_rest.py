"""The original ReST on the tiny model: a learned reward model, rising thresholds, warm-started steps."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from pydantic import ValidationError

from schemas.errors import RestemError
from schemas.io import read_rows
from schemas.params import Params, load_params
from schemas.tables import Kept, Score
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
    from stages import filter as filter_stage
    from stages import grow, improve, reward_model, score

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
    from stages import score

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

    from stages import improve
    from stages.modeling import load_policy, model_hash, read_meta

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
    from stages import evaluate

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
