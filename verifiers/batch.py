"""Grading many samples with one verifier, each kind where its registry entry (verifiers/base.py) says:
pure checks in-process, math in a process pool with hard per-sample timeouts, code in sandboxes; and the
`Score` rows of a batch of samples (`score_samples`), which the score stage, Evaluate and the voters write."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows
from restem.schemas.tables import Problem, Score
from restem.verifiers.math_extract import DEFAULT_EXTRACTION, verifier_options
from restem.workspace import problems_dir

from restem.verifiers.base import IN_PROCESS, SANDBOX, Verdict, get_verifier, get_verifier_entry, score_all


def grade_batch(verifier: str, pairs: Sequence[tuple[str, Mapping[str, Any]]], workers: int = 0,
                timeout_s: float = 10.0, options: Optional[Mapping[str, Any]] = None) -> tuple[list[Verdict], dict]:
    """Verdicts for (completion, problem) pairs in input order, and counts of timeouts and crashes.

    workers: processes or sandboxes (0: one per CPU). timeout_s: hard limit per sample (per program run
    for code). options: the verifier's constructor options (`get_verifier(verifier, **options)`), the
    same in this process and in every pool worker. A timeout or crash of a math grader is the verdict
    `error`, never `incorrect`.
    """
    from restem.verifiers.pool import default_workers

    options = dict(options or {})
    entry = get_verifier_entry(verifier)
    workers = workers or default_workers()
    if entry.runs == IN_PROCESS:
        return score_all(get_verifier(verifier, **options), pairs), {"timeouts": 0, "crashes": 0, "restarts": 0}
    if entry.runs == SANDBOX:
        from restem.verifiers.code_exec import Limits

        verdicts = entry.load()(Limits(timeout_s=timeout_s)).score_batch(list(pairs), workers=workers)
        timeouts = sum(v.details.get("outcome") == "timeout" for v in verdicts)
        return verdicts, {"timeouts": timeouts, "crashes": 0, "restarts": 0}
    from restem.verifiers.pool import score_pooled

    # a partial of the module-level get_verifier pickles, so each worker builds the verifier with `options`
    spec = partial(get_verifier, verifier, **options) if options else verifier
    verdicts, stats = score_pooled(spec, list(pairs), workers=workers, timeout_s=timeout_s)
    return verdicts, {k: stats[k] for k in ("timeouts", "crashes", "restarts")}


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
