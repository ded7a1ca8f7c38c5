"""Grading many samples with one verifier, each kind where its registry entry (verifiers/base.py) says:
pure checks in-process, math in a process pool with hard per-sample timeouts, code in sandboxes."""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Optional, Sequence

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
