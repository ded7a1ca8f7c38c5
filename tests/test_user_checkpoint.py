"""A user's own local checkpoint and problem files run through the same stages as the embedded default."""

import json
import shutil

from typer.testing import CliRunner

from restem.schemas.io import read_rows
from restem.schemas.params import Params
from restem.schemas.tables import Sample, Score
from restem.stages import base, filter as filter_stage, grow, improve, problems, score
from restem.cli.main import app
from restem.workspace import iter_dir, model_dir
from restem.training.modeling import resolve_checkpoint


def test_own_checkpoint_and_problem_files(tmp_path, tiny_raw, trained_root):
    trained, _ = trained_root
    root = tmp_path / "ws"
    checkpoint = root / "inputs" / "base" / "my-model"  # where DVC tracks it by content (stage base's dep)
    shutil.copytree(trained / "models" / "iter0", checkpoint)
    (checkpoint / "restem.json").unlink()  # a plain Hugging Face folder, as users have
    rows = [{"question": f"{a}+{b}=", "answer": a + b} for a in range(10, 40, 3) for b in range(11, 50, 7)]
    (root / "inputs" / "problems").mkdir(parents=True)
    (root / "inputs" / "problems" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40]))
    (root / "inputs" / "problems" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[40:]))
    tiny_raw["problems"] = {"source": "files", "seed": 0, "files": {  # relative paths: from the workspace root
        "train": "inputs/problems/train.jsonl", "test": "inputs/problems/test.jsonl",
        "prompt_field": "question", "reference_field": "answer"}}
    tiny_raw["base"]["checkpoint"] = str(checkpoint)
    tiny_raw["score"]["verifier"] = "exact"
    params = Params.model_validate(tiny_raw)

    problems.run(params, root)
    meta = base.run(params, root)
    assert meta.checkpoint == str(checkpoint.resolve())
    assert sorted(p.name for p in model_dir(0, root).iterdir()) == ["restem.json"]  # no copy of the weights
    assert resolve_checkpoint(model_dir(0, root)) == checkpoint.resolve()

    grow.run(params, 1, 0, root)
    samples = read_rows(iter_dir(1, root) / "samples.parquet", Sample)
    assert {s["policy"] for s in samples} == {meta.model_hash}
    score.run(params, 1, root)
    scores = read_rows(iter_dir(1, root) / "scores.parquet", Score)
    assert any(s["correct"] for s in scores) and all(s["verifier"].startswith("exact") for s in scores)
    filter_stage.run(params, 1, root)
    improve.run(params, 1, 0, root)
    new_meta = json.loads((model_dir(1, root) / "restem.json").read_text())
    assert new_meta["parent"] == meta.model_hash and (model_dir(1, root) / "model.safetensors").exists()


def test_metrics_command_prints_a_table(monkeypatch, tmp_path):
    folder = tmp_path / "metrics" / "iterations"
    folder.mkdir(parents=True)
    for i, acc in enumerate([0.25, 0.5]):
        (folder / f"iter{i}.json").write_text(json.dumps({"iteration": i, "test": {"in_dist": {
            "pass@1": acc, "pass@4": acc + 0.1, "maj@4": acc, "wrong_steps_rate": None, "truncated": 0.125 * i}},
            "grow_truncated": {"samples": 8, "share": 0.375, "kept": 0} if i else None}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["metrics"])
    assert result.exit_code == 0, result.output
    assert "0.250" in result.output and "0.600" in result.output
    assert "0.125" in result.output and "0.375" in result.output  # eval and Grow truncated shares


def test_metrics_command_without_metrics_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["metrics"])
    assert result.exit_code == 2
