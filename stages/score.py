"""Stage `score`: one verdict per sample, `data/iter<i>/scores.parquet`.

The verifier named in `score.verifier` judges each completion against its problem; an exception
is recorded as the verdict `error` and counted, never as `incorrect`. With `score.reward: model` the
reward is the learned reward model's score (`models/reward`), and the verifier's verdict stays beside
it in the same row, so reward hacking is a query (`reward` high, `correct` false).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Sequence

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows, write_rows
from restem.schemas.params import Params, load_params
from restem.schemas.tables import Problem, Sample, Score
from restem.workspace import iter_dir, log, problems_dir, parse_args, stage_main
from restem.verifiers import get_verifier
from restem.verifiers.batch import grade_batch
from restem.verifiers.math_extract import DEFAULT_EXTRACTION, verifier_options



def problem_view(row: dict) -> dict:
    """What a verifier sees of a problem: the row, with `meta` parsed from JSON."""
    return {**row, "meta": json.loads(row.get("meta") or "{}")}


def score_samples(verifier_name: str, samples: Sequence[dict], problems: dict[str, dict], workers: int = 0,
                  timeout_s: float = 10.0, stats: dict | None = None,
                  extraction: str = DEFAULT_EXTRACTION) -> list[Score]:
    """Score rows for samples; every sample's problem must be known. `stats` receives the counts of
    timeouts and crashes. `extraction` (strict | lenient) reaches the math and gsm8k verifiers only."""
    options = verifier_options(verifier_name, extraction)
    verifier = get_verifier(verifier_name, **options)
    missing = [s["problem_id"] for s in samples if s["problem_id"] not in problems]
    if missing:
        raise RestemError(f"{len(missing)} samples name problems that are not in the problem set "
                          f"(first: {missing[0]}); rerun `problems` and `grow`")
    verdicts, counts = grade_batch(verifier_name, [(s["completion"], problems[s["problem_id"]]) for s in samples],
                                   workers, timeout_s, options)
    if stats is not None:
        stats.update(counts)
    label = f"{verifier.name} {verifier.version}"
    return [
        Score(sample_id=s["sample_id"], problem_id=s["problem_id"], iteration=s["iteration"], verifier=label,
              reward=v.reward, correct=v.correct, verdict=v.verdict, extracted=v.extracted,
              steps_valid=v.steps_valid, details=v.details_json())
        for s, v in zip(samples, verdicts)
    ]


def load_problems(root: Path, split: str) -> dict[str, dict]:
    return {p["problem_id"]: problem_view(p) for p in read_rows(problems_dir(root) / f"{split}.parquet", Problem)}


def with_model_rewards(scores: Sequence[Score], samples: Sequence[dict], root: Path, batch_size: int) -> list[Score]:
    """The same rows with `reward` from the reward model in `models/reward`."""
    from restem.training.reward import score_with_model
    from restem.workspace import reward_dir

    rewards, rm_hash = score_with_model(reward_dir(root), samples, batch_size)
    return [sc.model_copy(update={"reward": r, "reward_model": rm_hash}) for sc, r in zip(scores, rewards)]


def run(params: Params, iteration: int, root: Path = Path(".")) -> Counter:
    samples = read_rows(iter_dir(iteration, root) / "samples.parquet", Sample)
    stats: dict = {}
    scores = score_samples(params.score.verifier, samples, load_problems(root, "train"), params.runtime.workers,
                           params.score.timeout_s, stats, params.score.extraction)
    if params.score.reward == "model":
        scores = with_model_rewards(scores, samples, root, params.runtime.batch_size)
    out = iter_dir(iteration, root) / "scores.parquet"
    write_rows(out, Score, scores)
    counts = Counter(s.verdict for s in scores)
    log(f"score@{iteration}: {dict(sorted(counts.items()))}, timeouts {stats['timeouts']}, "
        f"crashes {stats['crashes']} -> {out}")
    return counts


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args("score", __doc__, argv, "iteration")
    run(load_params(args.params), args.iteration)


if __name__ == "__main__":
    main()
