"""Grow and Evaluate split into shards (separate processes, or Ray tasks) merge into the same bytes as
an unsharded run; a merge with a shard missing fails and writes nothing."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import TINY, write_params, pythonpath
from restem.schemas.errors import RestemError
from restem.schemas.params import Params
from restem.stages import evaluate, grow, problems
from restem.workspace import iter_dir
from restem.sampling.shards import Shard, owned, parse_shard

ENV = {**os.environ, "PYTHONPATH": pythonpath()}


def _workspace(tmp_path, trained_root, name):
    """Problems and models/iter0 of the trained fixture; Grow chunks of 5 problems (24 problems: 5 chunks)."""
    trained, _ = trained_root
    root = tmp_path / name
    shutil.copytree(trained / "models", root / "models")
    raw = {**TINY, "runtime": {**TINY["runtime"], "grow_shard_problems": 5}}
    params_file = write_params(root / "params.yaml", raw)
    params = Params.model_validate(raw)
    problems.run(params, root)
    return root, params, params_file


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory, trained_root):
    """samples.parquet of an unsharded Grow run."""
    root, params, _ = _workspace(tmp_path_factory.mktemp("grow"), trained_root, "unsharded")
    grow.run(params, 1, 0, root)
    return (iter_dir(1, root) / "samples.parquet").read_bytes()


def _grow_cmd(params_file, *extra):
    return [sys.executable, "-m", "restem.stages.grow", "--iteration", "1", "--prev", "0", "--params", str(params_file), *extra]


def test_shards_partition_the_work():
    for total in (0, 1, 4, 5, 24):
        for count in (1, 2, 3, 7):
            parts = [list(owned(total, Shard(i, count))) for i in range(count)]
            assert sum(parts, []) == list(range(total))  # every unit once, in order, contiguous
    assert parse_shard("1/4") == Shard(1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(Exception, match="--shard"):
            parse_shard(bad)


def test_grow_shards_as_processes_merge_to_unsharded_bytes(tmp_path, trained_root, unsharded):
    root, params, params_file = _workspace(tmp_path, trained_root, "sharded")
    procs = [subprocess.Popen(_grow_cmd(params_file, "--shard", f"{i}/2"), cwd=root, env=ENV,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert "chunks 1-2 of 5" in errs[0] and "chunks 3-5 of 5" in errs[1]
    shards = sorted((iter_dir(1, root) / ".grow-shards").glob("shard-*.parquet"))
    assert len(shards) == 5 and not (iter_dir(1, root) / "samples.parquet").exists()

    grow.run(params, 1, 0, root, merge=True)
    assert (iter_dir(1, root) / "samples.parquet").read_bytes() == unsharded
    assert not (iter_dir(1, root) / ".grow-shards").exists()


def test_merge_with_a_shard_missing_fails_and_writes_nothing(tmp_path, trained_root):
    root, params, _ = _workspace(tmp_path, trained_root, "missing")
    grow.run(params, 1, 0, root, shard=Shard(0, 2))
    with pytest.raises(RestemError, match=r"3 of 5 chunks not computed yet \(numbers 3, 4, 5\)"):
        grow.run(params, 1, 0, root, merge=True)
    assert not (iter_dir(1, root) / "samples.parquet").exists()
    assert len(list((iter_dir(1, root) / ".grow-shards").glob("shard-*.parquet"))) == 2  # kept for the rerun


def test_bad_sharding_options_are_refused(tmp_path, trained_root):
    root, _, params_file = _workspace(tmp_path, trained_root, "options")
    for extra, message in [(["--shard", "2/2"], "0 <= i < n"), (["--ray"], "need --shards"),
                           (["--shards", "2", "--merge"], "drop --shard/--merge")]:
        proc = subprocess.run(_grow_cmd(params_file, *extra), cwd=root, env=ENV, capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)
    assert not (iter_dir(1, root) / "samples.parquet").exists()


def test_grow_shards_as_ray_tasks_merge_to_unsharded_bytes(tmp_path, trained_root, unsharded):
    pytest.importorskip("ray", reason="Ray is optional: pip install 'restem[cluster]'")
    root, _, params_file = _workspace(tmp_path, trained_root, "ray")
    proc = subprocess.run(_grow_cmd(params_file, "--shards", "2", "--ray"), cwd=root, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 shards as Ray tasks (local)" in proc.stderr and "shard 1/2: chunks 3-5 of 5" in proc.stderr
    assert (iter_dir(1, root) / "samples.parquet").read_bytes() == unsharded


def test_evaluate_sharded_by_model_equals_unsharded(tmp_path, trained_root):
    def workspace(name):
        root, params, _ = _workspace(tmp_path, trained_root, name)
        shutil.copytree(root / "models" / "iter0", root / "models" / "iter1")  # a second model to spread
        return root, params

    whole, params = workspace("whole")
    evaluate.run(params, whole)
    split, _ = workspace("split")
    with pytest.raises(RestemError, match="iter0.json: model iter0 has no up-to-date evaluation"):
        evaluate.run(params, split, merge=True)
    assert evaluate.run(params, split, shard=Shard(1, 2)) == {}
    assert not (split / "metrics" / "summary.json").exists()
    assert [p.name for p in (split / "metrics" / "iterations").iterdir()] == ["iter1.json"]
    evaluate.run(params, split, shard=Shard(0, 2))
    evaluate.run(params, split, merge=True)
    files = sorted(p.relative_to(whole) for folder in ("metrics", "data/eval") for p in (whole / folder).rglob("*")
                   if p.is_file())
    assert len(files) >= 8
    for f in files:
        assert (split / f).read_bytes() == (whole / f).read_bytes(), f
