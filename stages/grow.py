"""Stage `grow`: K completions per training problem from the current policy,
`data/iter<i>/samples.parquet`.

Each (problem, sample index) gets its own seed derived from (grow.seed, iteration, problem_id,
index), so a sample does not depend on batch order and reruns are byte-identical.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from restem.schemas.hashing import content_hash, derive_seed
from restem.schemas.io import read_rows, read_table, sort_table, to_table, write_rows, write_table
from restem.schemas.errors import RestemError
from restem.schemas.loop import PoolSlice
from restem.schemas.params import Params, load_params
from restem.schemas.params import RuntimeParams
from restem.schemas.tables import Problem, Sample
from restem.workspace import iter_dir, log, model_dir, problems_dir, parse_args, stage_main
from restem.sampling.engines import Engine, Request, SamplingParams, TransformersEngine, device_and_dtype, set_threads
from restem.sampling.shards import Shard, check_arguments, owned, run_shards
from restem.training.modeling import load_policy, model_hash


def make_engine(name: str, policy: Path, batch_size: int, runtime: RuntimeParams | None = None) -> Engine:
    """The sampling engine named in params (grow.engine), over the policy folder; `runtime` holds the vllm
    engine's knobs (defaults when None)."""
    if name == "transformers":
        device, dtype = device_and_dtype((runtime or RuntimeParams()).precision)
        model, tokenizer = load_policy(policy, dtype)
        return TransformersEngine(model.to(device), tokenizer, batch_size=batch_size)
    if name == "vllm":
        from restem.sampling.vllm_engine import VLLMEngine

        r = runtime or RuntimeParams()
        return VLLMEngine(policy, tensor_parallel_size=r.tensor_parallel_size, kv_cache_gb=r.vllm_kv_cache_gb,
                          gpu_memory_utilization=r.gpu_memory_utilization, max_num_seqs=batch_size,
                          dtype=r.vllm_dtype)
    raise ValueError(f"unknown engine {name!r}")  # params validation rules this out


def numerics(engine: str, runtime: RuntimeParams) -> dict:
    """What sets the arithmetic of `make_engine(engine, ...)` beyond the params sections: the device and dtype of
    the transformers engine (runtime.precision, resolved), or vLLM's dtype (runtime.vllm_dtype). Samples change
    when it changes, so Grow's resume key and Evaluate's memo key hold it (and dvc.yaml tracks both knobs)."""
    if engine == "vllm":
        return {"vllm_dtype": runtime.vllm_dtype}
    device, dtype = device_and_dtype(runtime.precision)
    return {"device": device, "dtype": dtype}


def sample(engine: Engine, problems: Sequence[dict], k: int, sampling: SamplingParams, seed: int, iteration: int,
           purpose: str, policy: str, label: str = "") -> list[Sample]:
    """k samples per problem as Sample rows (greedy when sampling.temperature is 0)."""
    keys, requests = [], []
    for p in problems:
        for index in range(k):
            s = derive_seed(seed, iteration, p["problem_id"], index)
            keys.append((p, index, s))
            requests.append(Request(p["prompt"], s))
    completions = engine.generate(requests, sampling, progress=label)
    rows = []
    for (p, index, s), c in zip(keys, completions):
        rows.append(Sample(
            sample_id=content_hash("sample", p["problem_id"], policy, sampling.as_dict(), index, s),
            problem_id=p["problem_id"], iteration=iteration, purpose=purpose, policy=policy, engine=engine.name,
            sample_index=index, seed=s, temperature=sampling.temperature, prompt=p["prompt"], completion=c.text,
            finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
        ))
    return rows


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


def shard_key(policy: str, sampling: SamplingParams, params: Params, iteration: int, problem_ids: list[str]) -> str:
    """What a shard's rows depend on; a shard left by an interrupted run is reused only if this matches."""
    g = params.grow
    return content_hash("grow-shard", policy, sampling.as_dict(), g.engine, g.samples_per_problem, g.seed, iteration,
                        problem_ids, numerics(g.engine, params.runtime))


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
    sampling = SamplingParams(g.temperature, g.max_new_tokens, g.top_p, g.top_k)
    size = params.runtime.grow_shard_problems
    shard_dir = iter_dir(iteration, root) / ".grow-shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    engine = None
    tables = []
    started = time.monotonic()
    n_shards = (len(problems) + size - 1) // size
    mine, missing = owned(n_shards, shard), []
    if shard is not None and not mine:
        log(f"grow@{iteration}: shard {shard} has nothing to do: {n_shards} chunks of {size} problems for "
            f"{shard.count} shards (lower runtime.grow_shard_problems to use every shard)")
    for number, start in enumerate(range(0, len(problems), size)):
        if number not in mine:
            continue
        chunk = problems[start : start + size]
        key = shard_key(policy, sampling, params, iteration, [p["problem_id"] for p in chunk])
        path = shard_dir / f"shard-{number:05d}-{key}.parquet"
        if path.exists():
            log(f"grow@{iteration}: shard {number + 1}/{n_shards} already done, reusing it")
        elif merge:
            missing.append(number + 1)
            continue
        else:
            engine = engine or make_engine(g.engine, policy_dir, params.runtime.batch_size, params.runtime)
            rows = sample(engine, chunk, g.samples_per_problem, sampling, g.seed, iteration, "grow", policy,
                          label=f"grow@{iteration} shard {number + 1}/{n_shards}")
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
    out = iter_dir(iteration, root) / "samples.parquet"
    merged = pa.concat_tables(tables) if tables else to_table(Sample, [])
    merged = sort_table(merged, Sample).combine_chunks()
    write_table(out, merged)
    shutil.rmtree(shard_dir)
    tokens = pc.sum(merged["completion_tokens"]).as_py() or 0
    seconds = max(time.monotonic() - started, 1e-9)
    log(f"grow@{iteration}: {merged.num_rows} samples, {tokens} tokens from models/iter{prev} in {seconds:.1f} s "
        f"({merged.num_rows / seconds:,.0f} samples/s, {tokens / seconds:,.0f} tok/s, resumed shards included) -> {out}")
    return merged.num_rows


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args("grow", __doc__, argv, "iteration", "prev", sharding=True)
    check_arguments(args)
    params = load_params(args.params)
    if args.shards:
        run_shards("grow", ["--iteration", str(args.iteration), "--prev", str(args.prev)], args.params, args.shards,
                   args.ray, args.address, args.cpus_per_shard, args.gpus_per_shard)
    run(params, args.iteration, args.prev, shard=args.shard, merge=args.merge or bool(args.shards))


if __name__ == "__main__":
    main()
