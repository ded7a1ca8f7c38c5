"""Grow and Evaluate split into shards that run as separate processes, GPUs or nodes.

A shard is `--shard i/n` (i counted from 0): a deterministic, contiguous share of a stage's work.
- Grow's unit of work is its resumable chunk (`runtime.grow_shard_problems` problems, by sorted
  problem_id, written to `data/iter<i>/.grow-shards/`); shard i/n computes chunks
  [i*C/n, (i+1)*C/n) of the C chunks and writes them in exactly the format an unsharded run writes,
  so a later unsharded run, or `--merge`, concatenates and sorts them into the same bytes.
- Evaluate's unit of work is one model (its memo `metrics/iterations/iter<m>.json` plus
  `data/eval/iter<m>/`); shard i/n evaluates its share of the loop's models, and the merge (or an
  unsharded run) reuses them all and writes the summary, the CSV and the plots.

The shards can be started by hand or by a job scheduler (one job per `--shard i/n`, e.g. a SLURM
array), or by the driver here (`--shards N`): N local processes, or N Ray tasks (`--ray`; Ray on
this machine, or the cluster at `--address` / `RAY_ADDRESS`), one per shard, each reserving
`--cpus-per-shard` CPUs and `--gpus-per-shard` GPUs (Ray pins them via CUDA_VISIBLE_DEVICES). Each
task runs `python -m restem.stages.<stage> ... --shard i/n` in the same folder, so on a cluster every node
needs the repository, its environment and the data at the same path (a shared filesystem).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from restem.schemas.errors import RestemError
from restem.workspace import log


@dataclass(frozen=True)
class Shard:
    index: int  # from 0
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`i/n` with 0 <= i < n, as given to `--shard`."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4 (i counts from 0)") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need n >= 1 and 0 <= i < n (i counts from 0)")
    return Shard(index, count)


def owned(total: int, shard: Shard | None) -> range:
    """The positions in [0, total) that `shard` works on: a contiguous block; all of them if None."""
    if shard is None:
        return range(total)
    return range(shard.index * total // shard.count, (shard.index + 1) * total // shard.count)


def check_arguments(shard: Shard | None, merge: bool, shards: int | None, ray: bool, address: str | None) -> None:
    """Reject combinations of the sharding options (restem/cli/stages.py) that make no sense, naming the one to drop."""
    if shards is not None and shards < 1:
        raise RestemError(f"--shards {shards}: need at least 1")
    if shards and (shard or merge):
        raise RestemError("--shards runs every shard and the merge itself: drop --shard/--merge")
    if shard and merge:
        raise RestemError("--shard computes one shard, --merge merges them all: use one of them")
    if (ray or address) and not shards:
        raise RestemError("--ray/--address need --shards N (how many shards to run)")


def shard_commands(stage: str, stage_args: Sequence[str], params: Path | str, count: int) -> list[list[str]]:
    """The command line of each shard of `python -m restem.stages.<stage>`."""
    return [[sys.executable, "-m", f"restem.stages.{stage}", *stage_args, "--params", str(params), "--shard", f"{i}/{count}"]
            for i in range(count)]


def _code_root() -> str:
    """The folder holding this `stages` package: shards import the same code as the driver (in a DVC
    temp copy, the copy's code), whatever their working directory."""
    return str(Path(__file__).resolve().parents[1])


def _with_code_path(env: dict, code_root: str) -> dict:
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (code_root, env.get("PYTHONPATH")) if p)}


def run_local(commands: Sequence[Sequence[str]], cwd: Path) -> None:
    """Run the shard commands as concurrent processes on this machine; raise if any failed."""
    env = _with_code_path(dict(os.environ), _code_root())
    procs = [subprocess.Popen(list(cmd), cwd=cwd, env=env) for cmd in commands]
    failed = [(cmd[-1], code) for cmd, code in zip(commands, [p.wait() for p in procs]) if code != 0]
    _raise_failures(failed)


def _raise_failures(failed: list[tuple[str, int]]) -> None:
    if failed:
        raise RestemError("shard " + ", ".join(f"{shard} exited with status {code}" for shard, code in failed)
                          + " (its output is above); fix the cause and rerun: finished shards are kept and reused")


def run_ray(commands: Sequence[Sequence[str]], cwd: Path, address: str | None = None, cpus_per_shard: float = 1.0,
            gpus_per_shard: float = 0.0) -> None:
    """Run the shard commands as Ray tasks, one per shard; raise if any failed.

    Without `address` (and no RAY_ADDRESS), Ray starts on this machine with enough CPUs declared
    for every shard to start at once, and is shut down afterwards.
    """
    try:
        import ray
    except ImportError:
        raise RestemError("--ray needs Ray: pip install 'restem[cluster]' (or pip install ray)") from None
    address = address or os.environ.get("RAY_ADDRESS")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=max(len(commands) * cpus_per_shard, os.cpu_count() or 1), include_dashboard=False,
                     log_to_driver=True)
    try:
        def run_one(cmd: list[str], folder: str, code_root: str) -> int:
            # One shard as a child process, which inherits the GPUs Ray assigned (CUDA_VISIBLE_DEVICES).
            # Defined here so Ray ships it by value: workers need not import this package.
            import os
            import subprocess

            path = os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p)
            return subprocess.run(cmd, cwd=folder, env={**os.environ, "PYTHONPATH": path}).returncode

        task = ray.remote(run_one).options(num_cpus=cpus_per_shard, num_gpus=gpus_per_shard, max_retries=0)
        refs = [task.remote(list(cmd), str(Path(cwd).resolve()), _code_root()) for cmd in commands]
        codes = ray.get(refs)
    finally:
        if started_here:
            ray.shutdown()
    _raise_failures([(cmd[-1], code) for cmd, code in zip(commands, codes) if code != 0])


def run_shards(stage: str, stage_args: Sequence[str], params: Path | str, count: int, use_ray: bool = False,
               address: str | None = None, cpus_per_shard: float = 1.0, gpus_per_shard: float = 0.0,
               root: Path = Path(".")) -> None:
    """Run every shard of a stage (the caller merges afterwards)."""
    commands = shard_commands(stage, stage_args, params, count)
    how = f"Ray tasks ({address or os.environ.get('RAY_ADDRESS') or 'local'})" if use_ray else "local processes"
    log(f"{stage}: running {count} shards as {how}")
    if use_ray:
        run_ray(commands, root, address, cpus_per_shard, gpus_per_shard)
    else:
        run_local(commands, root)
