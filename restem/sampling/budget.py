"""Grow's sampling budget by difficulty (DART-Math, Tong et al. 2024): params `grow.budget`.

- `fixed`: K samples per problem (grow.samples_per_problem), as ReST-EM; nothing is graded in Grow.
- `uniform`: rounds; each round draws K samples for every still-open problem and grades them with the task's
  verifier (score.verifier, as the score stage does). A problem closes when it has `k_correct` correct samples
  (stop `reached`) or `max_trials` samples (stop `capped`).
- `prop2diff`: the same rounds, but the correct samples a problem wants are proportional to its difficulty:
  after the first round (K samples for every problem), fail_rate = share of its K samples not correct, and
  wanted = ceil(total_correct * fail_rate / sum of all fail rates). The fail rate is measured in this first
  round, not taken from the previous iteration's pass_rates.parquet: the policy that samples now is the one
  whose difficulty counts, and a first iteration has no earlier table. A problem every first-round sample
  solves wants 0 more and closes at once.
- `total_samples` (either mode): samples the whole pool may spend in this iteration, so that methods are
  compared at equal cost (e.g. K x pool size, what fixed K spends). The first round samples every problem
  (it must fit); when a later round does not fit, it samples only the open problems that miss the most
  correct samples (wanted - correct, then fewest samples, then problem_id), as many as the rest allows, and the
  others close with stop `spent`.

Round r draws sample indices r*K .. r*K+K-1 (every open problem has had all earlier rounds), so sample_ids stay
distinct and seeds derive from (seed, iteration, problem_id, index) as in fixed mode. Each round's rows are
written atomically to `data/iter<i>/.grow-rounds/round-<r>-<key>.parquet`, the key holding everything the rows
depend on (policy, sampling, budget, the open problems); a rerun after a crash reuses the finished rounds, and
since grading is deterministic it reopens the same problems, so the merged output has the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.io import read_table, write_rows
from restem.schemas.params import BudgetParams, Params
from restem.schemas.tables import Budget, Sample
from restem.workspace import log


def fixed_rows(problems: Sequence[dict], k: int, iteration: int) -> list[Budget]:
    """The budget table of a fixed-K Grow: K samples, one round, not graded."""
    return [Budget(problem_id=p["problem_id"], iteration=iteration, mode="fixed", samples=k, rounds=1, correct=None,
                   wanted=None, stop="fixed") for p in problems]


def wanted_by_fail_rate(correct: dict[str, int], k: int, total: int) -> dict[str, int]:
    """prop2diff: the correct samples each problem wants, from its first-round correct count out of k."""
    fail = {pid: 1.0 - c / k for pid, c in correct.items()}
    mass = sum(fail.values())
    if mass == 0:  # every sample of every problem is right: nothing is hard, nothing more is wanted
        return {pid: 0 for pid in correct}
    return {pid: math.ceil(total * f / mass - 1e-9) for pid, f in fail.items()}


def round_key(base_key: str, b: BudgetParams, number: int, open_ids: Sequence[str]) -> str:
    return content_hash("grow-round", base_key, b.model_dump(), number, list(open_ids))


def run_rounds(params: Params, iteration: int, problems: Sequence[dict], base_key: str, folder: Path,
               draw: Callable[[list[dict], int, str], list[Sample]],
               grade: Callable[[list[dict]], dict[str, int]]) -> tuple[list[pa.Table], list[Budget]]:
    """Sample `problems` in rounds until each is reached or capped; returns the rounds' tables and the budget rows.

    base_key: what every row depends on besides the budget (policy, sampling, engine numerics: grow.py's
    shard key of the whole pool). draw(open problems, first sample index, label) samples K each; grade(rows)
    gives the number of correct rows per problem_id. Finished rounds in `folder` are reused.
    """
    b, k = params.grow.budget, params.grow.samples_per_problem
    folder.mkdir(parents=True, exist_ok=True)
    samples = {p["problem_id"]: 0 for p in problems}
    correct = dict(samples)
    wanted = {pid: b.k_correct for pid in samples} if b.mode == "uniform" else {}
    open_problems, tables, number = list(problems), [], 0
    if b.total_samples is not None and b.total_samples < k * len(problems):
        raise RestemError(f"grow.budget.total_samples {b.total_samples} is less than one round of "
                          f"grow.samples_per_problem {k} for the {len(problems)} problems of iteration {iteration} "
                          f"({k * len(problems)}): the first round samples every problem; raise total_samples or "
                          "lower samples_per_problem")
    while open_problems:
        if b.total_samples is not None:
            fits = (b.total_samples - sum(samples.values())) // k
            if fits < len(open_problems):  # the most-missing first; the rest close as `spent`
                first = sorted(open_problems, key=lambda p: (correct[p["problem_id"]] - wanted[p["problem_id"]],
                                                             samples[p["problem_id"]], p["problem_id"]))[:fits]
                chosen = {p["problem_id"] for p in first}
                open_problems = [p for p in open_problems if p["problem_id"] in chosen]
                if not open_problems:
                    break
        ids = [p["problem_id"] for p in open_problems]
        path = folder / f"round-{number:04d}-{round_key(base_key, b, number, ids)}.parquet"
        if path.exists():
            log(f"grow@{iteration}: budget round {number + 1} ({len(ids)} problems) already done, reusing it")
        else:
            write_rows(path, Sample, draw(open_problems, number * k, f"grow@{iteration} round {number + 1}"))
        table = read_table(path, Sample)
        tables.append(table)
        for pid, n in grade(table.to_pylist()).items():
            correct[pid] += n
        for pid in ids:
            samples[pid] += k
        if b.mode == "prop2diff" and number == 0:
            wanted = wanted_by_fail_rate(correct, k, b.total_correct)
        open_problems = [p for p in open_problems
                         if correct[p["problem_id"]] < wanted[p["problem_id"]] and samples[p["problem_id"]] < b.max_trials]
        log(f"grow@{iteration}: budget round {number + 1}: {len(ids)} problems sampled, {len(open_problems)} still open")
        number += 1
    rows = [Budget(problem_id=pid, iteration=iteration, mode=b.mode, samples=samples[pid], rounds=samples[pid] // k,
                   correct=correct[pid], wanted=wanted[pid],
                   stop=_stop(correct[pid], wanted[pid], samples[pid], b.max_trials)) for pid in samples]
    return tables, rows


def _stop(correct: int, wanted: int, samples: int, max_trials: int) -> str:
    if correct >= wanted:
        return "reached"
    return "capped" if samples >= max_trials else "spent"


def summary(rows: Sequence[Budget], k: int) -> str:
    """One log line: total generated samples against a fixed K, and how problems stopped."""
    total = sum(r.samples for r in rows)
    stops = {s: sum(r.stop == s for r in rows) for s in ("fixed", "reached", "capped", "spent")}
    return (f"{total} samples generated ({total / max(len(rows), 1):.2f} per problem; fixed K would be "
            f"{k * len(rows)}); " + ", ".join(f"{s} {n}" for s, n in stops.items() if n))
