"""`restem sql`: views over hand-made tables, output formats, errors, and --rev on a tiny git+DVC repo."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from restem.schemas.errors import RestemError
from restem.schemas.io import write_json, write_rows
from restem.schemas.tables import Kept, Problem, Rejected, Sample, Score
from restem.query.sql import connect, run_query, sql_command
from restem.query.views import VIEWS

GOOD_GSM = "He buys 2 * 3 = <<2*3=6>>6 pens.\nA: 6"
BAD_GSM = "He buys 2 * 3 = <<2*3=7>>7 pens, gives 1 away: 7 - 1 = 6.\nA: 6"


def sample(sid: str, pid: str, iteration: int, completion: str, purpose: str = "grow", temperature: float = 1.0,
           index: int = 0) -> Sample:
    return Sample(sample_id=sid, problem_id=pid, iteration=iteration, purpose=purpose, policy="pol", engine="test",
                  sample_index=index, seed=0, temperature=temperature, prompt=f"prompt {pid}", completion=completion,
                  finish_reason="stop", prompt_tokens=3, completion_tokens=5)


def score(s: Sample, correct: bool, steps_valid, verifier: str = "arithmetic 1", reward=None) -> Score:
    return Score(sample_id=s.sample_id, problem_id=s.problem_id, iteration=s.iteration, verifier=verifier,
                 reward=float(correct) if reward is None else reward, correct=correct if reward is None else None,
                 verdict=("correct" if correct else "incorrect") if reward is None else "unverifiable",
                 extracted="6", steps_valid=steps_valid,
                 details=json.dumps({"steps": "step 1 wrong"}) if steps_valid is False else "{}")


# (sample id, problem, iteration, completion, correct, steps_valid, filter outcome: kept or a reason)
GROW = [
    ("s1", "P1", 1, "1+2+0=3;3", True, True, "kept"),
    ("s2", "P1", 1, "1+2+0=4;3", True, False, "kept"),
    ("s3", "P2", 1, GOOD_GSM, True, True, "kept"),
    ("s4", "P2", 1, "He buys 2 * 3 = <<2*3=6>>6 pens.\nA: 5", False, None, "incorrect"),
    ("s5", "P3", 1, "9+9+0=18;18", False, True, "incorrect"),
    ("s6", "P3", 1, "9+9+0=17;17", False, False, "incorrect"),
    ("a1", "P1", 2, "1+2+0=3;3", True, True, "kept"),
    ("a2", "P1", 2, "1+2+0=3;3", True, True, "duplicate"),
    ("b1", "P2", 2, BAD_GSM, True, None, "kept"),  # verifier left steps_valid NULL: the text is rechecked
    ("b2", "P2", 2, "no idea", False, None, "incorrect"),
    ("c1", "P3", 2, "9+9+0=18;18", False, True, "incorrect"),
    ("c2", "P3", 2, "9+9+1=19;19", False, False, "incorrect"),
]


def make_workspace(root: Path, with_eval: bool = True) -> Path:
    """A two-iteration workspace with known answers (see GROW), plus eval rows, models and metrics."""
    root = Path(root)
    problems = [Problem(problem_id=p, split="train", subset="default", prompt=f"prompt {p}", reference="6",
                        source="test") for p in ("P1", "P2", "P3")]
    write_rows(root / "data/problems/train.parquet", Problem, problems)
    for it in (1, 2):
        rows = [r for r in GROW if r[2] == it]
        samples = [sample(r[0], r[1], it, r[3], index=i) for i, r in enumerate(rows)]
        scores = [score(s, r[4], r[5]) for s, r in zip(samples, rows)]
        write_rows(root / f"data/iter{it}/samples.parquet", Sample, samples)
        write_rows(root / f"data/iter{it}/scores.parquet", Score, scores)
        write_rows(root / f"data/iter{it}/kept.parquet", Kept, [
            Kept(sample_id=s.sample_id, problem_id=s.problem_id, iteration=it, prompt=s.prompt,
                 completion=s.completion, reward=1.0, rule="correct") for s, r in zip(samples, rows) if r[6] == "kept"])
        write_rows(root / f"data/iter{it}/rejected.parquet", Rejected, [
            Rejected(sample_id=s.sample_id, problem_id=s.problem_id, iteration=it, reward=float(r[4]),
                     filter_reason=r[6]) for s, r in zip(samples, rows) if r[6] != "kept"])
        write_json(root / f"models/iter{it}/restem.json", {
            "model_hash": f"m{it}", "iteration": it, "parent": f"m{it - 1}", "params": {"lr": 0.001},
            "train_log": [{"step": 10, "loss": 1.0}, {"step": 20 * it, "loss": 0.5 / it}
                          | ({"stop": "loss_target", "epoch": 7, "epoch_loss": 0.09} if it == 2 else {})]})
        write_json(root / f"metrics/iterations/iter{it}.json", {
            "iteration": it, "model": f"m{it}", "trained_on_samples": 3,
            "test": {"in_dist": {"n": 4, "pass@1": 0.25 * it, "maj@2": None}}})
    if with_eval:
        # model 1 on P1: one greedy row (temperature 0) and two sampled rows
        ev = [sample("e0", "P1", 1, "1+2+0=3;3", "eval", 0.0), sample("e1", "P1", 1, "1+2+0=3;3", "eval", 1.0, 0),
              sample("e2", "P1", 1, "1+2+0=5;5", "eval", 1.0, 1)]
        write_rows(root / "data/eval/iter1/samples.parquet", Sample, ev)
        write_rows(root / "data/eval/iter1/scores.parquet", Score,
                   [score(ev[0], True, True), score(ev[1], True, True), score(ev[2], False, False)])
    return root


@pytest.fixture
def workspace(tmp_path) -> Path:
    return make_workspace(tmp_path / "ws")


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("sql")(sql_command)
    app.command("other")(lambda: None)  # two commands, so `sql` is a subcommand as in restem/cli/main.py
    return app


def q(root: Path, sql: str) -> list[dict]:
    con = connect(root)
    try:
        return run_query(con, sql).to_pylist()
    finally:
        con.close()


def test_views_cover_every_table_and_iteration(workspace):
    counts = {r["v"]: r["n"] for r in q(workspace, """
        SELECT 'problems' v, count(*) n FROM problems UNION ALL SELECT 'samples', count(*) FROM samples
        UNION ALL SELECT 'scores', count(*) FROM scores UNION ALL SELECT 'kept', count(*) FROM kept
        UNION ALL SELECT 'rejected', count(*) FROM rejected UNION ALL SELECT 'models', count(*) FROM models""")}
    assert counts == {"problems": 3, "samples": len(GROW) + 3, "scores": len(GROW) + 3,
                      "kept": sum(r[6] == "kept" for r in GROW), "rejected": sum(r[6] != "kept" for r in GROW),
                      "models": 2}
    by = q(workspace, "SELECT iteration, purpose, count(*) n FROM scores GROUP BY ALL ORDER BY ALL")
    assert by == [{"iteration": 1, "purpose": "eval", "n": 3}, {"iteration": 1, "purpose": "grow", "n": 6},
                  {"iteration": 2, "purpose": "grow", "n": 6}]


def test_graded_joins_samples_scores_and_filter(workspace):
    rows = {r["sample_id"]: r for r in q(workspace, "SELECT sample_id, kept, filter_reason, correct FROM graded")}
    assert rows["s1"]["kept"] is True and rows["s1"]["filter_reason"] is None
    assert rows["a2"]["kept"] is False and rows["a2"]["filter_reason"] == "duplicate"
    assert rows["e0"]["kept"] is None  # evaluation rows are never filtered


def test_models_and_metrics_views(workspace):
    models = q(workspace, "SELECT iteration, model_hash, parent, train_steps, final_loss, params FROM models ORDER BY 1")
    assert [(m["model_hash"], m["parent"], m["train_steps"]) for m in models] == [("m1", "m0", 20), ("m2", "m1", 40)]
    assert models[1]["final_loss"] == pytest.approx(0.25) and json.loads(models[0]["params"]) == {"lr": 0.001}
    stops = q(workspace, "SELECT iteration, stopped_by, stop_epoch FROM models ORDER BY 1")
    assert stops == [{"iteration": 1, "stopped_by": None, "stop_epoch": None},
                     {"iteration": 2, "stopped_by": "loss_target", "stop_epoch": 7}]
    metrics = q(workspace, "SELECT m.iteration, value, model_hash FROM metrics m JOIN models USING (iteration) "
                           "WHERE metric = 'pass@1' ORDER BY 1")
    assert [(r["iteration"], r["value"], r["model_hash"]) for r in metrics] == [(1, 0.25, "m1"), (2, 0.5, "m2")]
    assert q(workspace, "SELECT count(*) n FROM metrics WHERE metric = 'maj@2'") == [{"n": 0}]  # null is no number
    assert q(workspace, "SELECT value FROM metrics WHERE subset IS NULL AND metric = 'trained_on_samples' "
                        "AND iteration = 2") == [{"value": 3.0}]


def test_reasoning_path_macro(workspace):
    paths = {r["sample_id"]: r["p"] for r in q(workspace, "SELECT sample_id, reasoning_path(completion) p FROM samples")}
    assert paths["s1"] == "1+2+0=3" and paths["s3"] == "2*3=6"
    assert paths["a1"] == paths["a2"] and paths["s1"] != paths["s2"]


def test_missing_tables_are_empty_views_with_the_schema(tmp_path):
    root = tmp_path / "ws"
    write_rows(root / "data/problems/train.parquet", Problem, [
        Problem(problem_id="P", split="train", subset="d", prompt="p", reference="1", source="t")])
    assert q(root, "SELECT count(*) n FROM samples") == [{"n": 0}]
    assert q(root, "SELECT count(*) n FROM graded WHERE steps_valid") == [{"n": 0}]


def test_output_formats(workspace):
    query = "SELECT iteration, count(*) AS n FROM kept GROUP BY 1 ORDER BY 1"
    res = CliRunner().invoke(cli(), ["sql", query, "--root", str(workspace), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert list(csv.DictReader(io.StringIO(res.stdout))) == [{"iteration": "1", "n": "3"}, {"iteration": "2", "n": "2"}]
    res = CliRunner().invoke(cli(), ["sql", query, "--root", str(workspace), "--format", "json"])
    assert json.loads(res.stdout) == [{"iteration": 1, "n": 3}, {"iteration": 2, "n": 2}]
    res = CliRunner().invoke(cli(), ["sql", query, "--root", str(workspace)])
    assert res.exit_code == 0 and "iteration" in res.stdout and "│ 2" in res.stdout


def test_errors_are_user_facing(workspace, tmp_path):
    res = CliRunner().invoke(cli(), ["sql", "SELECT nope FROM samples", "--root", str(workspace)])
    assert res.exit_code == 2 and "nope" in res.output and "--schema" in res.output
    res = CliRunner().invoke(cli(), ["sql", "SELECT 1", "--root", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "dvc repro" in res.output
    res = CliRunner().invoke(cli(), ["sql", "SELECT 1", "--root", str(workspace), "--format", "xml"])
    assert res.exit_code == 2 and "csv" in res.output
    with pytest.raises(RestemError, match="no query"):
        run_query(connect(workspace), "  ")


def test_schema_lists_every_view(workspace):
    res = CliRunner().invoke(cli(), ["sql", "--schema"])
    assert res.exit_code == 0
    for view in ("problems", "samples", "scores", "kept", "rejected", "models", "metrics", "graded"):
        assert f"\n{view}" in "\n" + res.stdout
    # every column the schema promises for `scores` exists
    con = connect(workspace)
    cols = set(run_query(con, "SELECT * FROM scores LIMIT 0").column_names)
    assert {"sample_id", "verifier", "steps_valid", "purpose", "iteration"} <= cols


def _sections(text: str) -> dict[str, str]:
    """The --schema text of each view: from the line `<view>: ...` to the next view's (or `functions`)."""
    names = [v.name for v in VIEWS] + ["functions"]
    starts = [(m.start(), m.group(1)) for m in re.finditer(rf"^({'|'.join(names)})\b", text, re.M)]
    return {name: text[start:end] for (start, name), (end, _) in zip(starts, starts[1:] + [(len(text), "")])}


def test_schema_documents_every_column_of_every_view(workspace):
    text = CliRunner().invoke(cli(), ["sql", "--schema"]).stdout
    sections = _sections(text)
    con = connect(workspace)
    for view in VIEWS:
        actual = run_query(con, f"SELECT * FROM {view.name} LIMIT 0").column_names
        documented = [name for c in view.columns for name in c.name.split(", ")]
        assert documented == actual, view.name  # same columns, same order
        for column in actual:
            assert re.search(rf"(^ +|[:,] ){column}\b", sections[view.name], re.M), f"{view.name}.{column} undocumented"
    # the gaps of the old hand-written copy: they come from the tables now
    assert "'reward'" in sections["samples"] and "threshold" in sections["kept"]
    assert "reward_model" in sections["scores"] and "reward_model" in sections["graded"]
    # a field's description is what the schema prints for its column
    assert Kept.model_fields["threshold"].description in " ".join(sections["kept"].split())


# ------------------------------------------------------------------------------------------ --rev


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_rev_reads_a_committed_revision_without_checkout(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    _run(["git", "init", "-q"], repo)
    _run(dvc + ["init", "-q"], repo)
    _run(dvc + ["config", "core.analytics", "false"], repo)
    make_workspace(repo, with_eval=False)
    for folder in ("data", "models", "metrics"):
        _run(dvc + ["add", "-q", folder], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", "two iterations"], repo)
    _run(["git", "tag", "v1"], repo)
    # the working tree moves on: iteration 2 is gone, committed as HEAD
    for path in ("data/iter2", "models/iter2"):
        shutil.rmtree(repo / path)
    (repo / "metrics/iterations/iter2.json").unlink()
    for folder in ("data", "models", "metrics"):
        _run(dvc + ["add", "-q", folder], repo)
    _run(["git", "commit", "-q", "-am", "drop iteration 2"], repo)

    query = "SELECT (SELECT count(*) FROM samples) s, (SELECT count(*) FROM models) m, (SELECT count(*) FROM metrics) x"
    runner = CliRunner()
    old = runner.invoke(cli(), ["sql", query, "--root", str(repo), "--rev", "v1", "--format", "json"])
    assert old.exit_code == 0, old.output
    now = runner.invoke(cli(), ["sql", query, "--root", str(repo), "--format", "json"])
    assert json.loads(old.stdout)[0]["s"] == len(GROW) and json.loads(now.stdout)[0]["s"] == 6
    assert json.loads(old.stdout)[0]["m"] == 2 and json.loads(now.stdout)[0]["m"] == 1
    assert not (repo / "data/iter2").exists()  # nothing was checked out
    bad = runner.invoke(cli(), ["sql", query, "--root", str(repo), "--rev", "no-such-rev"])
    assert bad.exit_code == 2 and "no-such-rev" in bad.output
