"""Grow survives SIGKILL: a rerun resumes from the finished shards and writes the same bytes as an
uninterrupted run; nothing half-written is ever read."""

import os
import shutil
import signal
import subprocess
import sys
import time

from conftest import TINY, write_params, pythonpath
from restem.schemas.params import Params
from restem.stages import grow, problems
from restem.workspace import iter_dir


def _workspace(tmp_path, trained_root, name):
    trained, _ = trained_root
    root = tmp_path / name
    shutil.copytree(trained / "models", root / "models")
    raw = {**TINY, "runtime": {**TINY["runtime"], "grow_shard_problems": 2}}
    raw["problems"] = {**TINY["problems"], "arithmetic": {**TINY["problems"]["arithmetic"], "train_count": 60}}
    params_file = write_params(root / "params.yaml", raw)
    params = Params.model_validate(raw)
    problems.run(params, root)
    return root, params, params_file


def test_killed_grow_resumes_to_identical_bytes(tmp_path, trained_root, capfd):
    root_a, params, _ = _workspace(tmp_path, trained_root, "uninterrupted")
    grow.run(params, 1, 0, root_a)
    expected = (iter_dir(1, root_a) / "samples.parquet").read_bytes()
    assert not (iter_dir(1, root_a) / ".grow-shards").exists()

    root_b, _, params_file = _workspace(tmp_path, trained_root, "killed")
    shards = iter_dir(1, root_b) / ".grow-shards"
    proc = subprocess.Popen([sys.executable, "-m", "restem.stages.grow", "--iteration", "1", "--prev", "0",
                             "--params", str(params_file)], cwd=root_b, env={**os.environ, "PYTHONPATH": pythonpath()},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in shards.glob("shard-*.parquet"))
    assert 3 <= len(done) < 30, done  # killed half-way
    assert not (iter_dir(1, root_b) / "samples.parquet").exists()

    capfd.readouterr()
    grow.run(params, 1, 0, root_b)
    assert f"shard 1/30 already done" in capfd.readouterr().err
    assert (iter_dir(1, root_b) / "samples.parquet").read_bytes() == expected
    assert not shards.exists()


def test_shards_of_other_params_are_not_reused(tmp_path, trained_root):
    root, params, _ = _workspace(tmp_path, trained_root, "stale")
    grow.run(params, 1, 0, root)
    first = (iter_dir(1, root) / "samples.parquet").read_bytes()
    stale = iter_dir(1, root) / ".grow-shards"
    stale.mkdir()
    (stale / "shard-00000-0000000000000000.parquet").write_bytes(b"not a finished shard of these params")
    other = params.model_copy(update={"grow": params.grow.model_copy(update={"seed": 1})})
    grow.run(other, 1, 0, root)
    assert (iter_dir(1, root) / "samples.parquet").read_bytes() != first
