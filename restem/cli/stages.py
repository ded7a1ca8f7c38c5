"""The command line of every stage, defined once: `restem <stage> ...` at a terminal and
`python -m restem.stages.<stage> ...` (what dvc.yaml runs) are the same typer command, so the options,
their checks and the exit status of a user error (restem/cli/errors.py) cannot differ between the two.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import typer

from restem.cli.errors import user_errors

# (command name, function), in the order `restem --help` lists them; restem/cli/main.py mounts them all.
STAGE_COMMANDS: list[tuple[str, Callable]] = []


def stage(name: str | None = None) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        STAGE_COMMANDS.append((name or fn.__name__, fn))
        return fn

    return register


def _run_stage(name: str, params: Path, *args, **kwargs) -> None:
    """Run `restem.stages.<name>.run(params, *args, **kwargs)`; a user error prints its message and exits 2."""
    import importlib

    with user_errors():
        importlib.import_module(f"restem.stages.{name}").run(read_params(params), *args, **kwargs)


SHARD = typer.Option(None, "--shard", metavar="I/N", help="compute only shard I of N (I from 0); merge later")
MERGE = typer.Option(False, "--merge", help="compute nothing: merge the finished shards")
SHARDS = typer.Option(None, "--shards", metavar="N", help="run N shards (processes, or Ray tasks with --ray), then merge")
RAY = typer.Option(False, "--ray", help="with --shards: run the shards as Ray tasks")
ADDRESS = typer.Option(None, "--address", help="with --ray: Ray cluster address (e.g. auto); default: RAY_ADDRESS or local")
CPUS = typer.Option(1.0, "--cpus-per-shard", help="with --ray: CPUs each shard reserves")
GPUS = typer.Option(0.0, "--gpus-per-shard", help="with --ray: GPUs each shard reserves (Ray pins them)")


def _sharded(name: str, stage_args: list[str], params: Path, shard: str | None, merge: bool, shards: int | None,
             ray: bool, address: str | None, cpus: float, gpus: float) -> dict:
    """Check the sharding options and run the shards if `--shards` asks; returns run()'s keyword arguments."""
    from restem.sampling.shards import check_arguments, parse_shard, run_shards

    try:
        one = parse_shard(shard) if shard is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with user_errors():
        check_arguments(shard=one, merge=merge, shards=shards, ray=ray, address=address)
        if shards:
            run_shards(name, stage_args, params, shards, ray, address, cpus, gpus)
    return {"shard": one, "merge": merge or bool(shards)}


def _ref(text: str):
    """An iteration number or a step key ('1b') from the command line."""
    from restem.workspace import model_ref

    try:
        return model_ref(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def read_params(path: Path):
    from restem.schemas.params import load_params

    with user_errors():
        return load_params(path)


PARAMS = typer.Option(Path("params.yaml"), "--params", help="params file")


@stage()
def problems(params: Path = PARAMS) -> None:
    """Write the problem set (data/problems)."""
    _run_stage("problems", params)


@stage()
def base(params: Path = PARAMS) -> None:
    """Train or link the base model (models/iter0)."""
    _run_stage("base", params)


@stage()
def grow(iteration: int = typer.Option(..., help="iteration number"),
         prev: str = typer.Option(..., help="model that samples: iteration number or step key ('1b')"),
         params: Path = PARAMS, shard: str = SHARD, merge: bool = MERGE, shards: int = SHARDS, ray: bool = RAY,
         address: str = ADDRESS, cpus_per_shard: float = CPUS, gpus_per_shard: float = GPUS) -> None:
    """Sample K completions per training problem (data/iter<i>/samples.parquet); sharding: restem/sampling/shards.py."""
    ref = _ref(prev)
    how = _sharded("grow", ["--iteration", str(iteration), "--prev", str(ref)], params, shard, merge, shards, ray,
                   address, cpus_per_shard, gpus_per_shard)
    _run_stage("grow", params, iteration, ref, **how)


@stage()
def score(iteration: int = typer.Option(...), params: Path = PARAMS) -> None:
    """Score every sample of an iteration (data/iter<i>/scores.parquet)."""
    _run_stage("score", params, iteration)


@stage()
def rationalize(iteration: int = typer.Option(...),
                prev: str = typer.Option(..., help="the model that grew it: iteration number or step key"),
                params: Path = PARAMS) -> None:
    """Sample the unsolved problems again with the answer as a hint (data/iter<i>/rationales.parquet)."""
    _run_stage("rationalize", params, iteration, _ref(prev))


@stage(name="filter")
def filter_(iteration: str = typer.Option(..., help="iteration number or step key ('1b')"),
            params: Path = PARAMS) -> None:
    """Keep the good samples (data/iter<i>/kept.parquet, rejected.parquet)."""
    _run_stage("filter", params, _ref(iteration))


@stage()
def improve(iteration: str = typer.Option(..., help="iteration number or step key ('1b')"),
            init: str = typer.Option(..., help="model to start from: iteration number or step key"),
            params: Path = PARAMS) -> None:
    """Fine-tune on the kept samples (models/iter<i>)."""
    _run_stage("improve", params, _ref(iteration), _ref(init))


@stage(name="reward-model")
def reward_model(params: Path = PARAMS) -> None:
    """Train (or link) the reward model used when score.reward is `model` (models/reward)."""
    _run_stage("reward_model", params)


@stage()
def voters(params: Path = PARAMS) -> None:
    """Train or link the agreement filter's voters and record their answers (models/voters/iter0, data/voters)."""
    _run_stage("voters", params)


@stage(name="voters-improve")
def voters_improve(iteration: int = typer.Option(..., help="iteration number"),
                   init: int = typer.Option(..., help="the iteration whose voters it starts from (0: as built)"),
                   params: Path = PARAMS) -> None:
    """Co-improving voters: fine-tune every voter on the policy's training rows (models/voters/iter<i>)."""
    _run_stage("voters_improve", params, iteration, init)


@stage()
def votes(iteration: int = typer.Option(..., help="iteration number"),
          prev: int = typer.Option(..., help="the iteration whose voters answer (0: as built)"),
          params: Path = PARAMS) -> None:
    """Co-improving voters: their greedy answers to an iteration's problems (data/iter<i>/votes.parquet)."""
    _run_stage("votes", params, iteration, prev)


@stage()
def evaluate(params: Path = PARAMS, shard: str = SHARD, merge: bool = MERGE, shards: int = SHARDS, ray: bool = RAY,
             address: str = ADDRESS, cpus_per_shard: float = CPUS, gpus_per_shard: float = GPUS) -> None:
    """Evaluate every model of the loop (metrics/); sharding by model: restem/sampling/shards.py."""
    how = _sharded("evaluate", [], params, shard, merge, shards, ray, address, cpus_per_shard, gpus_per_shard)
    _run_stage("evaluate", params, **how)


@stage()
def plots(params: Path = PARAMS) -> None:
    """Write the data of the DVC plots from the whole workspace (metrics/plots/)."""
    _run_stage("plots", params)


def run_module(module: str) -> None:
    """`python -m restem.stages.<module>`: run that stage's command with the process's arguments."""
    name = next(n for n, fn in STAGE_COMMANDS if n.replace("-", "_") == module)
    one = typer.Typer(add_completion=False)
    one.command(name=name)(dict(STAGE_COMMANDS)[name])
    typer.main.get_command(one).main(args=sys.argv[1:], prog_name=f"python -m restem.stages.{module}")
