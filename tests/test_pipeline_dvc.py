"""The whole loop under DVC, in a temporary copy with the miniature params: `dvc repro` runs every
stage, appending an iteration runs exactly its stages, and a second `dvc repro` runs nothing."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, copy_project, write_params



def _run(cmd, cwd, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("workspace"))
    write_params(root / "params.yaml", TINY)
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    _run(["dvc", "config", "core.analytics", "false"], root)
    return root


def test_repro_runs_the_whole_loop(workspace):
    proc = _run(["dvc", "repro"], workspace)
    ran = _stages_run(proc.stdout)
    assert ran == ["problems", "base", "reward_model", "voters", "grow@1", "score@1", "rationalize@1", "votes@1",
                   "filter@1", "improve@1", "voters_improve@1", "evaluate",
                   "plots"], ran
    assert (workspace / "metrics/summary.json").exists()
    assert (workspace / "data/iter1/kept.parquet").exists()


def test_appending_an_iteration_runs_exactly_its_stages(workspace):
    from restem.cli.main import append_iteration

    assert append_iteration(workspace / "params.yaml", warm=False) == 2
    assert "'2': {prev: 1, init: 0}" in (workspace / "params.yaml").read_text()
    ran = _stages_run(_run(["dvc", "repro"], workspace).stdout)
    assert sorted(ran) == sorted(["grow@2", "score@2", "rationalize@2", "votes@2", "filter@2", "improve@2", "voters_improve@2", "evaluate", "plots"]), ran


def test_second_repro_runs_nothing(workspace):
    _run(["dvc", "repro"], workspace)  # runs what is left to run when this test runs alone, nothing otherwise
    proc = _run(["dvc", "repro"], workspace)
    assert _stages_run(proc.stdout) == []
    assert "up to date" in proc.stdout
    status = _run(["dvc", "status"], workspace).stdout
    assert "Data and pipelines are up to date." in status, status


def test_metrics_show_has_the_headline(workspace):
    proc = _run(["dvc", "metrics", "show", "--json"], workspace)
    assert "latest" in proc.stdout and "pass@1" in proc.stdout


def test_duckdb_reads_every_sample(workspace):
    import duckdb

    con = duckdb.connect()
    n_grow = con.execute(f"select count(*) from read_parquet('{workspace}/data/iter*/samples.parquet')").fetchone()[0]
    iters = con.execute(
        f"select list(distinct iteration order by iteration) from read_parquet('{workspace}/data/iter*/samples.parquet')"
    ).fetchone()[0]
    assert iters == [1, 2]
    assert n_grow == 2 * TINY["problems"]["arithmetic"]["train_count"] * TINY["grow"]["samples_per_problem"]


def test_next_as_experiment_and_exp_diff_shows_the_headline_moving(workspace):
    _run(["git", "add", "-A"], workspace)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two iterations"], workspace)
    proc = _run([str(Path(sys.executable).parent / "restem"), "next", "--exp"], workspace)
    ran = _stages_run(proc.stdout)
    assert sorted(ran) == sorted(["grow@3", "score@3", "rationalize@3", "votes@3", "filter@3", "improve@3", "voters_improve@3", "evaluate", "plots"]), ran
    diff = _run(["dvc", "exp", "diff", "--json"], workspace).stdout
    import json

    summary = json.loads(diff)["metrics"]["metrics/summary.json"]
    assert summary["iterations"] == {"old": 2, "new": 3, "diff": 1}


def test_switching_to_the_agreement_filter_reruns_voters_and_filters_but_not_grow(workspace):
    import yaml

    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    # The base model, as a checkpoint of the user's in inputs/voters/, is the one voter (no training needed here).
    shutil.copytree(workspace / "models/iter0", workspace / "inputs/voters/base")
    raw["filter"].update(mode="agreement", voters={"seeds": [], "checkpoints": ["inputs/voters/base"],
                                                   "min_agree": None})
    write_params(workspace / "params.yaml", raw)
    ran = _stages_run(_run(["dvc", "repro"], workspace).stdout)
    assert "voters" in ran and {"filter@1", "filter@2", "filter@3"} <= set(ran), ran
    # Iteration 1's samples stand (later iterations sample from models trained on the new filter's output).
    assert not {"problems", "base", "reward_model", "grow@1", "score@1", "rationalize@1"} & set(ran), ran
    import json

    rule = json.loads((workspace / "metrics/filter/iter1.json").read_text())["rule"]
    assert rule.startswith("agreement;voters=1;min_agree=1")


def test_co_improving_voters_run_as_chains_in_the_dag_without_rebuilding_the_voters(workspace):
    """filter.voters.improve on (after the agreement test above): each iteration's voters are asked after they were
    improved on the previous iteration's training rows, in DAG order; the voters as built are not rebuilt."""
    import json

    import yaml

    from restem.training.modeling import model_hash

    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    assert raw["filter"]["mode"] == "agreement", "runs after the agreement test"
    raw["filter"]["voters"]["improve"] = True
    write_params(workspace / "params.yaml", raw)
    ran = _stages_run(_run(["dvc", "repro"], workspace).stdout)
    # Iteration 1's voters are the voters as built: the same votes, the same kept set, so improve@1 stands.
    assert not {"voters", "grow@1", "improve@1"} & set(ran), ran
    at = {name: i for i, name in enumerate(ran)}
    for k in (1, 2, 3):
        order = [at[f"{stage}@{k}"] for stage in ("votes", "filter", "improve", "voters_improve")
                 if f"{stage}@{k}" in at]
        assert order == sorted(order) and {f"votes@{k}", f"filter@{k}", f"voters_improve@{k}"} <= set(at), ran
    assert at["voters_improve@1"] < at["votes@2"] and at["voters_improve@2"] < at["votes@3"], ran
    second = json.loads((workspace / "metrics/votes/iter2.json").read_text())
    assert second["voters_of"] == "1"
    assert second["voters"]["ckpt1"]["model"] == model_hash(workspace / "models/voters/iter1/ckpt1")
    assert model_hash(workspace / "models/voters/iter1/ckpt1") != model_hash(workspace / "models/voters/iter0/ckpt1")
    assert _stages_run(_run(["dvc", "repro"], workspace).stdout) == []  # and then up to date
