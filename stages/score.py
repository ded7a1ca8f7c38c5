"""Stage `score`: one verdict per sample, `data/iter<i>/scores.parquet`, and per problem how often the
iteration's samples solve it, `data/iter<i>/pass_rates.parquet` (restem/stats.py pass_rates). The pass rates are
written here, not by the filter: they depend only on samples and verdicts, not on filter params, so a filter
change does not rewrite them and a ReST step (1b) shares its iteration's table.

The verifier named in `score.verifier` judges each completion against its problem; an exception
is recorded as the verdict `error` and counted, never as `incorrect`. With `score.reward: model` the
reward is the learned reward model's score (`models/reward`), and the verifier's verdict stays beside
it in the same row, so reward hacking is a query (`reward` high, `correct` false).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

from restem.schemas.io import read_rows, write_rows
from restem.schemas.params import Params
from restem.schemas.tables import PassRate, Sample, Score
from restem.stats import pass_rates
from restem.workspace import iter_dir, log
from restem.verifiers.batch import load_problems, score_samples



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
    write_rows(out.parent / "pass_rates.parquet", PassRate, pass_rates(samples, [s.model_dump() for s in scores]))
    counts = Counter(s.verdict for s in scores)
    log(f"score@{iteration}: {dict(sorted(counts.items()))}, timeouts {stats['timeouts']}, "
        f"crashes {stats['crashes']} -> {out}")
    return counts


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("score")
