"""Each stage's run() on the miniature params: outputs exist, make sense, and a rerun with the same
inputs gives byte-identical files."""

import json
from pathlib import Path

import pytest

from restem.schemas.io import read_rows
from restem.schemas.tables import Kept, PassRate, Problem, Rejected, Sample, Score
from restem.stages import base, evaluate, filter as filter_stage, grow, improve, problems, score
from restem.workspace import iter_dir, model_dir, problems_dir


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def loop_root(tmp_path_factory):
    """Problems, base, and one full iteration on the miniature params, run once for this module."""
    from conftest import TINY
    from restem.schemas.params import Params

    params = Params.model_validate(json.loads(json.dumps(TINY)))
    root = tmp_path_factory.mktemp("loop")
    problems.run(params, root)
    base.run(params, root)
    grow.run(params, 1, 0, root)
    score.run(params, 1, root)
    filter_stage.run(params, 1, root)
    improve.run(params, 1, 0, root)
    evaluate.run(params, root)
    return root, params


def test_problem_sets_are_disjoint_and_well_formed(loop_root):
    root, params = loop_root
    tables = {s: read_rows(problems_dir(root) / f"{s}.parquet", Problem) for s in ("demos", "train", "test")}
    ids = [set(r["problem_id"] for r in rows) for rows in tables.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(tables["train"]) == params.problems.arithmetic.train_count
    assert {r["subset"] for r in tables["test"]} == {"in_dist", "harder"}
    assert {r["difficulty"] for r in tables["test"] if r["subset"] == "harder"} == {3}
    assert all(r["solution"].endswith(";" + r["reference"]) for r in tables["demos"])


def test_grow_writes_k_seeded_samples_per_problem(loop_root):
    root, params = loop_root
    samples = read_rows(iter_dir(1, root) / "samples.parquet", Sample)
    k = params.grow.samples_per_problem
    assert len(samples) == k * params.problems.arithmetic.train_count
    assert len({s["sample_id"] for s in samples}) == len(samples)
    assert len({s["seed"] for s in samples}) == len(samples)
    meta = json.loads((model_dir(0, root) / "restem.json").read_text())
    assert {s["policy"] for s in samples} == {meta["model_hash"]}
    assert all(s["engine"].startswith("transformers ") for s in samples)


def test_score_and_filter_agree(loop_root):
    root, params = loop_root
    scores = read_rows(iter_dir(1, root) / "scores.parquet", Score)
    kept = read_rows(iter_dir(1, root) / "kept.parquet", Kept)
    rejected = read_rows(iter_dir(1, root) / "rejected.parquet", Rejected)
    assert len(kept) + len(rejected) == len(scores)
    correct = {s["sample_id"] for s in scores if s["correct"]}
    assert kept and {k["sample_id"] for k in kept} <= correct
    samples = {s["sample_id"]: s for s in read_rows(iter_dir(1, root) / "samples.parquet", Sample)}
    cut = {i for i, s in samples.items() if s["finish_reason"] == "length"}
    assert all(r["filter_reason"] == "truncated" for r in rejected if r["sample_id"] in cut)
    assert all(r["filter_reason"] == "incorrect" for r in rejected if r["sample_id"] not in correct | cut)
    assert not cut & {k["sample_id"] for k in kept}
    assert {k["finish_reason"] for k in kept} <= {"stop", "eos"}
    per_problem = {}
    for k in kept:
        per_problem[k["problem_id"]] = per_problem.get(k["problem_id"], 0) + 1
    assert max(per_problem.values()) <= params.filter.max_per_problem
    # score also wrote the per-problem pass rates, one row per Grow problem, agreeing with the verdicts
    rates = read_rows(iter_dir(1, root) / "pass_rates.parquet", PassRate)
    assert len(rates) == params.problems.arithmetic.train_count
    right = {}
    for s in scores:
        right[s["problem_id"]] = right.get(s["problem_id"], 0) + bool(s["correct"])
    assert {r["problem_id"]: r["correct"] for r in rates} == right
    assert all(r["samples"] == params.grow.samples_per_problem for r in rates)


def test_improve_trains_from_init_and_records_lineage(loop_root):
    root, _ = loop_root
    meta = json.loads((model_dir(1, root) / "restem.json").read_text())
    base_meta = json.loads((model_dir(0, root) / "restem.json").read_text())
    assert meta["parent"] == base_meta["model_hash"] and meta["model_hash"] != base_meta["model_hash"]
    assert meta["train_log"][-1]["loss"] < meta["train_log"][0]["loss"] * 1.5
    assert (model_dir(1, root) / "model.safetensors").exists() and (model_dir(1, root) / "tokenizer.json").exists()


def test_evaluate_writes_metrics_per_iteration_and_summary(loop_root):
    root, params = loop_root
    m0 = json.loads((root / "metrics/iterations/iter0.json").read_text())
    m1 = json.loads((root / "metrics/iterations/iter1.json").read_text())
    assert set(m0["test"]) == {"in_dist", "harder"}
    for m in (m0, m1):
        t = m["test"]["in_dist"]
        assert t["n"] == params.problems.arithmetic.test_count
        assert 0 <= t["pass@1_sampled"] <= t["pass@2"] <= 1
        assert 0 <= t["maj@2"] <= 1
    summary = json.loads((root / "metrics/summary.json").read_text())
    assert summary["iterations"] == 1
    assert summary["latest"]["in_dist"]["pass@1"] == m1["test"]["in_dist"]["pass@1"]
    assert summary["gain"]["in_dist"]["pass@1"] == pytest.approx(
        m1["test"]["in_dist"]["pass@1"] - m0["test"]["in_dist"]["pass@1"])
    lines = (root / "metrics/accuracy.csv").read_text().splitlines()
    assert lines[0].startswith("iteration,") and len(lines) == 3
    eval_scores = read_rows(root / "data/eval/iter1/scores.parquet", Score)
    assert len(eval_scores) == 2 * params.problems.arithmetic.test_count * (1 + params.evaluate.samples)
    # Truncation: of the Grow samples (as the filter counted them) and of each test set's evaluation samples.
    grown = read_rows(iter_dir(1, root) / "samples.parquet", Sample)
    cut = sum(s["finish_reason"] == "length" for s in grown)
    assert m0["grow_truncated"] is None
    assert m1["grow_truncated"] == {"samples": cut, "share": round(cut / len(grown), 6), "kept": 0}
    subset = {p["problem_id"]: p["subset"] for p in read_rows(root / "data/problems/test.parquet", Problem)}
    evaluated = read_rows(root / "data/eval/iter1/samples.parquet", Sample)
    for name in ("in_dist", "harder"):
        mine = [s for s in evaluated if subset[s["problem_id"]] == name]
        share = sum(s["finish_reason"] == "length" for s in mine) / len(mine)
        assert m1["test"][name]["truncated"] == round(share, 6)


@pytest.mark.parametrize("stage", ["problems", "grow", "score", "filter", "improve"])
def test_rerun_is_byte_identical(loop_root, stage):
    root, params = loop_root
    target = {
        "problems": (problems_dir(root), lambda: problems.run(params, root)),
        "grow": (iter_dir(1, root) / "samples.parquet", lambda: grow.run(params, 1, 0, root)),
        "score": (iter_dir(1, root) / "scores.parquet", lambda: score.run(params, 1, root)),
        "filter": (iter_dir(1, root) / "kept.parquet", lambda: filter_stage.run(params, 1, root)),
        "improve": (model_dir(1, root), lambda: improve.run(params, 1, 0, root)),
    }[stage]
    path, rerun = target
    before = _bytes(path) if path.is_dir() else path.read_bytes()
    rerun()
    after = _bytes(path) if path.is_dir() else path.read_bytes()
    assert before == after


def test_evaluate_reuses_unchanged_results(loop_root, capfd):
    root, params = loop_root
    before = _bytes(root / "metrics")
    evaluate.run(params, root)
    assert _bytes(root / "metrics") == before
    assert "unchanged, reusing" in capfd.readouterr().err


def test_evaluate_memo_key_follows_verifier_code(loop_root, monkeypatch):
    """Editing a verifier must invalidate stored evaluation results, not reuse them."""
    from pathlib import Path as P

    from restem import verifiers

    root, params = loop_root
    before = evaluate.eval_key(params, 0, root)
    original = P(verifiers.__file__).parent / "arithmetic.py"
    from restem.schemas import hashing

    real = hashing.file_hash
    monkeypatch.setattr(evaluate, "file_hash", lambda p: "edited" if P(p) == original else real(p))
    assert evaluate.eval_key(params, 0, root) != before
