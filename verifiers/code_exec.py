"""The HumanEval and APPS verifiers: run a completion with its tests in a sandbox, turn the run into a verdict.

The programs run in `restem.verifiers.sandbox` (see its header for what is and is not protected, and
`verifiers/isolation.py` for the isolation layers).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence

from restem.verifiers.verdict import Verdict
from restem.verifiers.sandbox import Limits, Sandbox, SandboxPool, shared_pool

__all__ = ["AppsVerifier", "HumanEvalVerifier", "Limits", "Sandbox", "SandboxPool", "grade_apps", "grade_humaneval",
           "humaneval_program", "same_output", "same_value"]


def _failure_details(result: Mapping[str, Any]) -> dict:
    """Why a run did not pass, for `Verdict.details`."""
    if "sandbox_died" in result:
        return {"outcome": "sandbox_died", "message": result["sandbox_died"]}
    if "sandbox_error" in result:
        return {"outcome": "sandbox_error", "message": result["sandbox_error"]}
    if result.get("timed_out"):
        outcome = "timeout"
    elif "signal" in result:
        outcome = f"killed by signal {result['signal']}"
    elif result.get("exit_code", 1) == 0:
        outcome = "ended before the tests finished"
    else:
        outcome = "failed"
    # Addresses (0x7f...) differ between runs; masking them keeps score files byte-identical.
    stderr = re.sub(r"0x[0-9a-fA-F]{6,}", "0x?", result.get("stderr", "")[-1500:])
    return {"outcome": outcome, "stderr": stderr}


def _infrastructure_failed(result: Mapping[str, Any]) -> bool:
    return "sandbox_error" in result


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The HumanEval program: prompt + completion, then the tests and the call that runs them."""
    return f"{prompt}{completion}\n{test}\n\ncheck({entry_point})\n"


def grade_humaneval(box: Sandbox, item: tuple[str, Mapping[str, Any]], limits: Limits = Limits()) -> Verdict:
    """Run one HumanEval completion against its tests in `box`."""
    completion, problem = item
    meta = problem.get("meta") or {}
    test = problem.get("test", meta.get("test"))
    entry = problem.get("entry_point", meta.get("entry_point"))
    if not test or not entry:
        return Verdict("unverifiable", 0.0, None, None, None, {"error": "problem has no `test`/`entry_point`"})
    result = box.run(humaneval_program(str(problem.get("prompt", "")), completion, test, entry), limits, "test")
    if result.get("finished"):
        # No timings in details: score files must be byte-identical across reruns.
        return Verdict("correct", 1.0, True, None, None, {"outcome": "passed"})
    if _infrastructure_failed(result):
        return Verdict("error", 0.0, None, None, None, _failure_details(result))
    return Verdict("incorrect", 0.0, False, None, None, _failure_details(result))


def _io_spec(problem: Mapping[str, Any]) -> tuple[list, list, Optional[str]]:
    meta = problem.get("meta") or {}
    spec = problem.get("input_output", meta.get("input_output"))
    if isinstance(spec, str):
        spec = json.loads(spec) if spec.strip() else {}
    spec = spec or {}
    fn_name = problem.get("fn_name") or meta.get("fn_name") or spec.get("fn_name")
    return list(spec.get("inputs") or []), list(spec.get("outputs") or []), fn_name


def _as_text(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def same_output(got: str, expected: Any) -> bool:
    """Compare stdout with the expected output, ignoring differences in whitespace."""
    return got.split() == _as_text(expected).split()


def same_value(got: Any, expected: Any) -> bool:
    """Call-based APPS: the return value equals the expected one, or the one-element list around it."""
    got = json.loads(json.dumps(got))
    return got == expected or [got] == expected


def grade_apps(box: Sandbox, item: tuple[str, Mapping[str, Any]], limits: Limits = Limits()) -> Verdict:
    """Run one APPS completion on every test case (stopping at the first failure) in `box`."""
    completion, problem = item
    try:
        inputs, outputs, fn_name = _io_spec(problem)
    except (ValueError, AttributeError) as exc:
        return Verdict("unverifiable", 0.0, None, None, None, {"error": f"input_output is not valid JSON: {exc}"})
    if not inputs or len(inputs) != len(outputs):
        return Verdict("unverifiable", 0.0, None, None, None,
                       {"error": f"{len(inputs)} inputs and {len(outputs)} outputs; need equal, non-zero counts"})
    for k, (given, expected) in enumerate(zip(inputs, outputs)):
        if fn_name:
            args = given if isinstance(given, list) else [given]
            result = box.run(completion, limits, "call", fn_name=fn_name, args=args)
            ok = result.get("finished") and same_value(result.get("value"), expected)
        else:
            result = box.run(completion, limits, "stdio", stdin=_as_text(given))
            ok = result.get("finished") and same_output(result.get("stdout", ""), expected)
        if not ok:
            if _infrastructure_failed(result):
                return Verdict("error", 0.0, None, None, None, _failure_details(result))
            details = _failure_details(result) if not result.get("finished") else {"outcome": "wrong output"}
            return Verdict("incorrect", 0.0, False, None, None, {**details, "test_case": k, "passed": k, "total": len(inputs)})
    return Verdict("correct", 1.0, True, None, None, {"outcome": "passed", "passed": len(inputs), "total": len(inputs)})


class _CodeVerifier:
    """Shared by the code verifiers: one sample via the shared pool, or many via `score_batch`."""

    name = "code"
    version = "1"

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits

    def _grade(self, box: Sandbox, item: tuple[str, Mapping[str, Any]]) -> Verdict:
        raise NotImplementedError

    def __call__(self, completion: str, problem: Mapping[str, Any]) -> Verdict:
        return shared_pool().map(self._grade, [(completion, problem)])[0]

    def score_batch(self, items: Sequence[tuple[str, Mapping[str, Any]]], workers: Optional[int] = None,
                    pool: Optional[SandboxPool] = None) -> list[Verdict]:
        """Verdicts for (completion, problem) pairs, in order, run on `workers` sandboxes in parallel."""
        own = pool is None
        pool = pool or SandboxPool(workers)
        try:
            return pool.map(self._grade, list(items))
        finally:
            if own:
                pool.close()


class HumanEvalVerifier(_CodeVerifier):
    """HumanEval: prompt + completion + tests + check(entry_point) must run to the end."""

    name = "humaneval"
    version = "2+sandbox"  # 2: tracebacks in details start at the program (no sandbox frame)

    def _grade(self, box: Sandbox, item: tuple[str, Mapping[str, Any]]) -> Verdict:
        return grade_humaneval(box, item, self.limits)


class AppsVerifier(_CodeVerifier):
    """APPS: stdin/stdout programs, or call-based when `fn_name` is given; all test cases must pass."""

    name = "apps"
    version = "2+sandbox"  # 2: tracebacks in details start at the program (no sandbox frame)

    def _grade(self, box: Sandbox, item: tuple[str, Mapping[str, Any]]) -> Verdict:
        return grade_apps(box, item, self.limits)
