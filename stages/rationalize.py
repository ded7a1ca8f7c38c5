"""Stage `rationalize`: STaR's rationalization of the problems Grow did not solve.

Inputs: `data/iter<i>/samples.parquet` and `scores.parquet` (Grow and Score of iteration i), the Grow pool
`data/problems/train.parquet`, and the policy that grew them, `models/iter<prev>`. Each problem without a
correct sample is sampled `rationalize.samples_per_problem` times with the hinted prompt (`rationalize.hint`,
holding the reference answer), and the samples are graded by the task verifier against the ORIGINAL
problem, as the score stage grades. Outputs: `data/iter<i>/rationales.parquet` (Sample rows, purpose
`rationale`, prompt = the hinted prompt the policy saw) and `data/iter<i>/rationale_scores.parquet`
(their Score rows). The filter stage keeps the correct ones, without the hint (restem/rationalize.py).

With `rationalize.enabled: false` both tables are written empty and no model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from restem.rationalize import hinted_problems, rationale_rows, unsolved
from restem.schemas.hashing import derive_seed
from restem.schemas.io import read_rows, write_together
from restem.schemas.params import Params
from restem.schemas.tables import Sample, Score
from restem.workspace import RATIONALE_SCORES, RATIONALES, iter_dir, log, model_dir


def write_tables(out_dir: Path, samples: list[Sample], scores: list[Score]) -> None:
    write_together(out_dir, {RATIONALES: (Sample, samples), RATIONALE_SCORES: (Score, scores)})


def run(params: Params, iteration: int, prev: int, root: Path = Path(".")) -> int:
    """Sample the unsolved problems of iteration `iteration` with hints; returns the number of correct rationales."""
    r, g = params.rationalize, params.grow
    out_dir = iter_dir(iteration, root)
    if not r.enabled:
        write_tables(out_dir, [], [])
        log(f"rationalize@{iteration}: rationalize.enabled is false; wrote empty tables")
        return 0
    from restem.sampling.engines import SamplingParams, set_threads
    from restem.sampling.sampler import make_engine, sample
    from restem.training.modeling import model_hash
    from restem.verifiers.batch import load_problems, score_samples

    set_threads(params.runtime.threads)
    samples = read_rows(out_dir / "samples.parquet", Sample)
    scores = read_rows(out_dir / "scores.parquet", Score)
    problems = load_problems(root, "train")
    todo = unsolved(samples, scores)
    hinted = hinted_problems(todo, problems, r.hint)
    rows: list[Sample] = []
    if hinted:
        policy_dir = model_dir(prev, root)
        engine = make_engine(g.engine, policy_dir, params.runtime.batch_size, params.runtime)
        sampling = SamplingParams(r.temperature, g.max_new_tokens, g.top_p, g.top_k)
        # a seed of its own: Grow's per-sample seeds would correlate the hinted samples with the failed ones
        seed = derive_seed(r.seed, "rationalize")
        rows = rationale_rows(sample(engine, hinted, r.samples_per_problem, sampling, seed, iteration, "rationale",
                                     model_hash(policy_dir), label=f"rationalize@{iteration}"))
    stats: dict = {"timeouts": 0, "crashes": 0}
    graded = score_samples(params.score.verifier, [r.model_dump() for r in rows], problems, params.runtime.workers, params.score.timeout_s,
                           stats, params.score.extraction) if rows else []
    write_tables(out_dir, rows, graded)
    right = sum(1 for s in graded if s.correct)
    reached = len({s.problem_id for s in graded if s.correct})
    log(f"rationalize@{iteration}: {len(todo)} of {len({s['problem_id'] for s in samples})} problems unsolved; "
        f"{len(rows)} hinted samples, {right} reach the reference, on {reached} problems "
        f"(timeouts {stats['timeouts']}, crashes {stats['crashes']}) -> {out_dir / RATIONALES}")
    return right


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("rationalize")
