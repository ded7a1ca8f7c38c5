"""Grading many samples with one verifier, each kind where it is fastest and safe:
pure checks in-process, math in a process pool with hard per-sample timeouts, code in sandboxes."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifiers.base import CODE, IN_PROCESS, Verdict, get_verifier, score_all


def grade_batch(verifier: str, pairs: Sequence[tuple[str, Mapping[str, Any]]], workers: int = 0,
                timeout_s: float = 10.0) -> tuple[list[Verdict], dict]:
    """Verdicts for (completion, problem) pairs in input order, and counts of timeouts and crashes.

    workers: processes or sandboxes (0: one per CPU). timeout_s: hard limit per sample (per program run
    for code). A timeout or crash of a math grader is the verdict `error`, never `incorrect`.
    """
    from verifiers.pool import default_workers

    workers = workers or default_workers()
    if verifier in IN_PROCESS:
        return score_all(get_verifier(verifier), pairs), {"timeouts": 0, "crashes": 0, "restarts": 0}
    if verifier in CODE:
        from verifiers.code_exec import AppsVerifier, HumanEvalVerifier, Limits

        cls = HumanEvalVerifier if verifier == "humaneval" else AppsVerifier
        verdicts = cls(Limits(timeout_s=timeout_s)).score_batch(list(pairs), workers=workers)
        timeouts = sum(v.details.get("outcome") == "timeout" for v in verdicts)
        return verdicts, {"timeouts": timeouts, "crashes": 0, "restarts": 0}
    from verifiers.pool import score_pooled

    verdicts, stats = score_pooled(verifier, list(pairs), workers=workers, timeout_s=timeout_s)
    return verdicts, {k: stats[k] for k in ("timeouts", "crashes", "restarts")}
