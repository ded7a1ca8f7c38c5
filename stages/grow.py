"""Stage `grow`: K completions per training problem from the current policy,
`data/iter<i>/samples.parquet` (sampling itself: restem/sampling/sampler.py, per-sample seeds there), or with
`grow.budget` a number per problem set by its difficulty (restem/sampling/budget.py); what each problem got is
`data/iter<i>/budget.parquet`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from restem.schemas.hashing import content_hash
from restem.schemas.io import read_rows, read_table, sort_table, to_table, write_rows, write_table
from restem.schemas.errors import RestemError
from restem.schemas.loop import PoolSlice
from restem.schemas.params import Params
from restem.schemas.tables import Budget, Problem, Sample
from restem.workspace import iter_dir, log, model_dir, problems_dir
from restem.sampling.engines import SamplingParams, set_threads
from restem.sampling.budget import fixed_rows, run_rounds, summary
from restem.sampling.shards import Shard, owned
from restem.sampling.sampler import make_engine, numerics, sample
from restem.training.modeling import model_hash
from restem.prompting import prompt_key


def pool_slice(problems: Sequence[dict], pool: PoolSlice, seed: int, iteration: int) -> list[dict]:
    """The problems of an iteration's curriculum slice: round(size * share) of each difficulty, drawn
    by a hash of (seed, iteration, problem_id), so each iteration draws afresh and reruns draw the same."""
    levels = sorted(pool.mix)
    counts = {d: round(pool.size * pool.mix[d]) for d in levels}
    counts[levels[-1]] += pool.size - sum(counts.values())  # rounding leftovers go to the hardest level
    chosen = []
    for d in levels:
        at_level = [p for p in problems if p["difficulty"] == d]
        if len(at_level) < counts[d]:
            raise RestemError(
                f"loop.iterations.'{iteration}'.pool wants {counts[d]} problems of difficulty {d} but the Grow pool "
                f"(data/problems/train.parquet) has {len(at_level)}; add problems of that difficulty "
                "(problems.arithmetic.train_digits / train_count) or lower pool.size")
        at_level.sort(key=lambda p: content_hash("pool", seed, iteration, p["problem_id"]))
        chosen += at_level[: counts[d]]
    return sorted(chosen, key=lambda p: p["problem_id"])


def shard_key(policy: str, sampling: SamplingParams, params: Params, iteration: int, problem_ids: list[str],
              root: Path = Path(".")) -> str:
    """What a shard's rows depend on; a shard left by an interrupted run is reused only if this matches."""
    g = params.grow
    return content_hash("grow-shard", policy, sampling.as_dict(), g.engine, g.samples_per_problem, g.seed, iteration,
                        problem_ids, numerics(g.engine, params.runtime), *prompt_key(params.prompt, root))


def run(params: Params, iteration: int, prev: int, root: Path = Path("."), shard: Shard | None = None,
        merge: bool = False) -> int:
    """Sample the Grow pool with models/iter<prev>; returns the number of samples written.

    Problems are sampled in shards of `runtime.grow_shard_problems`; each finished shard is written
    atomically to `data/iter<i>/.grow-shards/` under a name holding its key, so a rerun after a crash
    or kill resumes from the finished shards. The merged, sorted output is byte-identical to an
    uninterrupted run; the shards are removed once it is written.

    With `shard` (i/n), only that contiguous share of the chunks is computed and left in the shard
    folder, for `merge` (which computes nothing and fails if a chunk is missing) or a later unsharded
    run; it returns the number of samples in its chunks. See restem/sampling/shards.py.
    """
    set_threads(params.runtime.threads)
    g = params.grow
    problems = sorted(read_rows(problems_dir(root) / "train.parquet", Problem), key=lambda p: p["problem_id"])
    entry = params.loop.iterations.get(str(iteration))
    if entry is not None and entry.pool is not None:
        problems = pool_slice(problems, entry.pool, g.seed, iteration)
        log(f"grow@{iteration}: curriculum slice of {len(problems)} problems, mix {dict(entry.pool.mix)}")
    policy_dir = model_dir(prev, root)
    policy = model_hash(policy_dir)
    sampling = SamplingParams(g.temperature, g.max_new_tokens, g.top_p, g.top_k, tuple(g.stop))
    started = time.monotonic()
    if g.budget.mode != "fixed":
        if shard is not None or merge:
            raise RestemError(f"grow.budget.mode {g.budget.mode} samples in rounds that depend on each other: run "
                              "grow without --shard/--merge/--shards (or set grow.budget.mode: fixed)")
        return _budgeted(params, iteration, prev, problems, policy, sampling, root, started)
    size = params.runtime.grow_shard_problems
    shard_dir = iter_dir(iteration, root) / ".grow-shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    engine = None
    tables = []
    n_shards = (len(problems) + size - 1) // size
    mine, missing = owned(n_shards, shard), []
    if shard is not None and not mine:
        log(f"grow@{iteration}: shard {shard} has nothing to do: {n_shards} chunks of {size} problems for "
            f"{shard.count} shards (lower runtime.grow_shard_problems to use every shard)")
    for number, start in enumerate(range(0, len(problems), size)):
        if number not in mine:
            continue
        chunk = problems[start : start + size]
        key = shard_key(policy, sampling, params, iteration, [p["problem_id"] for p in chunk], root)
        path = shard_dir / f"shard-{number:05d}-{key}.parquet"
        if path.exists():
            log(f"grow@{iteration}: shard {number + 1}/{n_shards} already done, reusing it")
        elif merge:
            missing.append(number + 1)
            continue
        else:
            engine = engine or make_engine(g.engine, policy_dir, params.runtime.batch_size, params.runtime)
            rows = sample(engine, chunk, g.samples_per_problem, sampling, g.seed, iteration, "grow", policy,
                          label=f"grow@{iteration} shard {number + 1}/{n_shards}", prompt=params.prompt, root=root)
            write_rows(path, Sample, rows)
        tables.append(read_table(path, Sample))
    if shard is not None:
        rows = sum(t.num_rows for t in tables)
        log(f"grow@{iteration}: shard {shard}: chunks {mine.start + 1}-{mine.stop} of {n_shards} done ({rows} samples) "
            f"in {shard_dir}; merge with --merge")
        return rows
    if missing:
        raise RestemError(f"{shard_dir}: {len(missing)} of {n_shards} chunks not computed yet (numbers "
                          f"{', '.join(map(str, missing[:10]))}{', ...' if len(missing) > 10 else ''}); run the missing "
                          "--shard i/n (same params and runtime.grow_shard_problems), or run without --merge to "
                          "compute them here")
    n = _write(tables, fixed_rows(problems, g.samples_per_problem, iteration), iteration, prev, root, started)
    shutil.rmtree(shard_dir)
    return n


def _budgeted(params: Params, iteration: int, prev: int, problems: list[dict], policy: str, sampling: SamplingParams,
              root: Path, started: float) -> int:
    """Grow with grow.budget uniform or prop2diff: rounds graded by the task verifier (restem/sampling/budget.py)."""
    from restem.verifiers.batch import load_problems, score_samples

    g, r, sc = params.grow, params.runtime, params.score
    policy_dir = model_dir(prev, root)
    engine = None
    by_id = load_problems(root, "train")

    def draw(open_problems: list[dict], first_index: int, label: str) -> list[Sample]:
        nonlocal engine
        engine = engine or make_engine(g.engine, policy_dir, r.batch_size, r)
        return sample(engine, open_problems, g.samples_per_problem, sampling, g.seed, iteration, "grow", policy,
                      label=label, first_index=first_index, prompt=params.prompt, root=root)

    def grade(rows: list[dict]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in score_samples(sc.verifier, rows, by_id, r.workers, sc.timeout_s, None, sc.extraction):
            counts[s.problem_id] = counts.get(s.problem_id, 0) + bool(s.correct)
        return counts

    folder = iter_dir(iteration, root) / ".grow-rounds"
    base_key = shard_key(policy, sampling, params, iteration, [p["problem_id"] for p in problems], root)
    tables, rows = run_rounds(params, iteration, problems, base_key, folder, draw, grade)
    log(f"grow@{iteration}: budget {g.budget.mode}: {summary(rows, g.samples_per_problem)}")
    n = _write(tables, rows, iteration, prev, root, started)
    shutil.rmtree(folder)
    return n


def _write(tables: list[pa.Table], budget: list[Budget], iteration: int, prev: int, root: Path, started: float) -> int:
    """Write the merged, sorted samples and the budget table; returns the number of samples."""
    out = iter_dir(iteration, root) / "samples.parquet"
    merged = pa.concat_tables(tables) if tables else to_table(Sample, [])
    merged = sort_table(merged, Sample).combine_chunks()
    write_table(out, merged)
    write_rows(out.parent / "budget.parquet", Budget, budget)
    tokens = pc.sum(merged["completion_tokens"]).as_py() or 0
    seconds = max(time.monotonic() - started, 1e-9)
    log(f"grow@{iteration}: {merged.num_rows} samples, {tokens} tokens from models/iter{prev} in {seconds:.1f} s "
        f"({merged.num_rows / seconds:,.0f} samples/s, {tokens / seconds:,.0f} tok/s, resumed shards included) -> {out}")
    return merged.num_rows


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("grow")
