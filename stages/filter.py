"""Stage `filter`: the training set of an iteration, `data/iter<i>/kept.parquet`, and every dropped
sample with its reason, `data/iter<i>/rejected.parquet`.

ReST-EM's rule: keep samples with reward 1, at most `max_per_problem` per problem (lowest sample
index first), optionally without exact duplicate completions and without right answers reached
through wrong steps. Each decision is `(keep, reason)`; counts per reason are logged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

from schemas.errors import RestemError
from schemas.io import atomic_dir, read_rows, write_rows
from schemas.params import FilterParams, Params, load_params
from schemas.tables import Kept, Rejected, Sample, Score
from stages.common import iter_dir, log, parse_args, stage_main

SORT = ["problem_id", "sample_id"]


def rule_name(f: FilterParams) -> str:
    return f"{f.mode};cap={f.max_per_problem};dedup={str(f.dedup).lower()};valid_steps={str(f.require_valid_steps).lower()}"


def judge(score: dict, completion: str, seen: set[str], n_kept: int, f: FilterParams) -> tuple[bool, Optional[str]]:
    """(keep, reason dropped) for one sample, given what was already kept for its problem."""
    if score["verdict"] in ("error", "unverifiable"):
        return False, score["verdict"]
    if score["reward"] < 1.0 or not score["correct"]:
        return False, "incorrect"
    if f.require_valid_steps and score["steps_valid"] is False:
        return False, "invalid_steps"
    if f.dedup and completion in seen:
        return False, "duplicate"
    if n_kept >= f.max_per_problem:
        return False, "over_cap"
    return True, None


def select(samples: Sequence[dict], scores: Sequence[dict], f: FilterParams) -> tuple[list[Kept], list[Rejected]]:
    """Apply the filter to joined samples and scores."""
    by_id = {s["sample_id"]: s for s in scores}
    missing = [s["sample_id"] for s in samples if s["sample_id"] not in by_id]
    if missing:
        raise RestemError(f"{len(missing)} samples have no score (first: {missing[0]}); rerun `score`")
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        groups[s["problem_id"]].append(s)
    rule = rule_name(f)
    kept, rejected = [], []
    for problem_id in sorted(groups):
        seen: set[str] = set()
        for s in sorted(groups[problem_id], key=lambda r: (r["sample_index"], r["sample_id"])):
            score = by_id[s["sample_id"]]
            keep, reason = judge(score, s["completion"], seen, len(seen), f)
            common = {"sample_id": s["sample_id"], "problem_id": problem_id, "iteration": s["iteration"],
                      "reward": score["reward"]}
            if keep:
                seen.add(s["completion"] if f.dedup else s["sample_id"])
                kept.append(Kept(**common, prompt=s["prompt"], completion=s["completion"], rule=rule))
            else:
                rejected.append(Rejected(**common, filter_reason=reason))
    return kept, rejected


def run(params: Params, iteration: int, root: Path = Path(".")) -> Counter:
    folder = iter_dir(iteration, root)
    samples = read_rows(folder / "samples.parquet", Sample)
    scores = read_rows(folder / "scores.parquet", Score)
    kept, rejected = select(samples, scores, params.filter)
    counts = Counter(r.filter_reason for r in rejected)
    counts["kept"] = len(kept)
    if not kept:
        raise RestemError(
            f"filter@{iteration}: no sample was kept out of {len(samples)} ({dict(counts)}); the policy solved "
            "nothing in the Grow pool: sample more (grow.samples_per_problem, grow.temperature), use easier "
            "problems, or a stronger base model"
        )
    # Both tables appear together or not at all.
    staging = folder / ".filter"
    with atomic_dir(staging) as tmp:
        write_rows(tmp / "kept.parquet", Kept, kept, sort_by=SORT)
        write_rows(tmp / "rejected.parquet", Rejected, rejected, sort_by=SORT)
    for name in ("kept.parquet", "rejected.parquet"):
        (staging / name).replace(folder / name)
    staging.rmdir()
    problems = len({k.problem_id for k in kept})
    log(f"filter@{iteration}: kept {len(kept)} samples of {problems} problems; dropped {dict(sorted(counts.items()))}")
    return counts


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args("filter", __doc__, argv, "iteration")
    run(load_params(args.params), args.iteration)


if __name__ == "__main__":
    main()
