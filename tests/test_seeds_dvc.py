"""`restem seeds run` over two seeds as real DVC experiments (miniature params), a rerun that queues nothing,
and `restem seeds report` reading them back through `--rev` the way `restem sql --rev` does. Slow: two whole
pipelines, about five minutes on two shared cores."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, copy_project, write_params


def _env():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)  # `python -m` from the workspace imports the workspace's copy of restem
    return env


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _restem(*args, cwd):
    return _run([sys.executable, "-m", "restem.cli.main", *args], cwd)


@pytest.mark.slow
def test_two_seeds_as_experiments_resume_and_report(tmp_path):
    root = copy_project(tmp_path)
    write_params(root / "params.yaml", TINY)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        _run(cmd, root)

    out = _restem("seeds", "run", "0-1", "--set", "reward_model.seed={seed}", cwd=root)
    assert "-n seed-0 -S base.train.seed=0 -S grow.seed=0 -S improve.seed=0 -S evaluate.seed=0 " \
           "-S reward_model.seed=0" in out, out
    again = _restem("seeds", "run", "0", "1", "--set", "reward_model.seed={seed}", cwd=root)
    assert "seed-0: done, not queued again" in again and "seed-1: done, not queued again" in again, again
    assert "--queue" not in again and "Reproducing" not in again

    metrics = {}
    for name in ("seed-0", "seed-1"):
        shown = json.loads(_restem("sql", "select ref, environment from models where ref = '0'", "--rev", name,
                                   "--format", "json", cwd=root))
        assert json.loads(shown[0]["environment"])["threads"] == TINY["runtime"]["threads"]
        rows = json.loads(_restem("sql", "select ref, subset, value from metrics where metric = 'pass@1'",
                                  "--rev", name, "--format", "json", cwd=root))
        metrics[name] = {(r["ref"], r["subset"]): r["value"] for r in rows}
    assert metrics["seed-0"] != metrics["seed-1"]  # the seed changed the run

    report = json.loads(_restem("seeds", "report", "--format", "json", cwd=root))
    by = {(r["iteration"], r["test"], r["metric"]): r for r in report}
    for (ref, test), v0 in metrics["seed-0"].items():
        row = by[(ref, test, "pass@1")]
        assert row["n"] == 2 and row["run"] == "2 runs"
        assert row["mean"] == pytest.approx((v0 + metrics["seed-1"][(ref, test)]) / 2, abs=1e-6)
        assert row["min"] <= row["mean"] <= row["max"]
        if ref != "0":
            gain = [metrics[s][(ref, test)] - metrics[s][("0", test)] for s in ("seed-0", "seed-1")]
            assert by[(ref, test, "pass@1 gain")]["mean"] == pytest.approx(sum(gain) / 2, abs=1e-6)

    # one run: a bootstrap over its test problems, whose point estimate is Evaluate's own pass@1
    csv = _restem("seeds", "report", "--rev", "seed-1", "--resamples", "500", "--format", "csv", cwd=root)
    import csv as csv_module

    lines = list(csv_module.reader(csv.strip().splitlines()))
    assert lines[0] == "run,iteration,test,metric,n,mean,std,min,max,ci_low,ci_high,method".split(",")
    assert len(lines) == 1 + 2 * 2 + 1 * 2  # per test set: pass@1 of the base and iteration 1, the gain of 1
    for run, ref, test, metric, n, mean, _, _, _, low, high, method in lines[1:]:
        assert run == "seed-1" and method.startswith("bootstrap 500x seed 0")
        assert float(low) <= float(mean) <= float(high)
        if metric == "pass@1":
            assert float(mean) == pytest.approx(metrics["seed-1"][(ref, test)], abs=1e-6)
            assert int(n) == TINY["problems"]["arithmetic"]["test_count"]

    # Experiments fetched from another clone bring their git commits, not their DVC outputs: the report reads
    # metrics (git-tracked) only, so it works without the cache; the bootstrap needs data/eval and says so.
    import shutil

    shutil.rmtree(root / ".dvc" / "cache")
    assert json.loads(_restem("seeds", "report", "--format", "json", cwd=root)) == report
    proc = subprocess.run([sys.executable, "-m", "restem.cli.main", "seeds", "report", "--rev", "seed-1"], cwd=root,
                          capture_output=True, text=True, env=_env())
    assert proc.returncode != 0 and "--rev 'seed-1'" in proc.stderr and "dvc exp pull" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
