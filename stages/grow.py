"""Stage `grow`: K completions per training problem from the current policy,
`data/iter<i>/samples.parquet`.

Each (problem, sample index) gets its own seed derived from (grow.seed, iteration, problem_id,
index), so a sample does not depend on batch order and reruns are byte-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from schemas.hashing import content_hash, derive_seed
from schemas.io import read_rows, write_rows
from schemas.params import Params, load_params
from schemas.tables import Problem, Sample
from stages.common import iter_dir, log, model_dir, problems_dir, parse_args, stage_main
from stages.engines import Engine, Request, SamplingParams, TransformersEngine, set_threads
from stages.modeling import load_policy, model_hash

SORT = ["problem_id", "purpose", "temperature", "sample_index"]


def make_engine(name: str, policy: Path, batch_size: int) -> Engine:
    """The sampling engine named in params, over the policy folder."""
    if name == "transformers":
        model, tokenizer = load_policy(policy)
        return TransformersEngine(model, tokenizer, batch_size=batch_size)
    raise ValueError(f"unknown engine {name!r}")  # params validation rules this out


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


def run(params: Params, iteration: int, prev: int, root: Path = Path(".")) -> int:
    """Sample the Grow pool with models/iter<prev>; returns the number of samples written."""
    set_threads(params.runtime.threads)
    g = params.grow
    problems = read_rows(problems_dir(root) / "train.parquet", Problem)
    policy_dir = model_dir(prev, root)
    engine = make_engine(g.engine, policy_dir, params.runtime.batch_size)
    sampling = SamplingParams(g.temperature, g.max_new_tokens, g.top_p, g.top_k)
    rows = sample(engine, problems, g.samples_per_problem, sampling, g.seed, iteration, "grow",
                  model_hash(policy_dir), label=f"grow@{iteration}")
    out = iter_dir(iteration, root) / "samples.parquet"
    n = write_rows(out, Sample, rows, sort_by=SORT)
    tokens = sum(r.completion_tokens for r in rows)
    log(f"grow@{iteration}: {n} samples ({tokens} tokens) from models/iter{prev} -> {out}")
    return n


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args("grow", __doc__, argv, "iteration", "prev")
    run(load_params(args.params), args.iteration, args.prev)


if __name__ == "__main__":
    main()
