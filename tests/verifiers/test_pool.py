"""The pooled grader: order kept, hard timeouts and crashes become `error`, never `incorrect`."""

from __future__ import annotations

import os
import time

from restem.verifiers.base import Verdict
from restem.verifiers.math_answer import GSM8KVerifier
from restem.verifiers.pool import score_pooled


class SleepyVerifier:
    """Sleeps for the number of seconds in the completion `sleep:<s>`, dies on `die`, raises on `raise`."""

    name = "sleepy"
    version = "test"

    def __call__(self, completion, problem):
        if completion.startswith("sleep:"):
            time.sleep(float(completion.split(":")[1]))
        if completion == "die":
            os._exit(3)
        if completion == "raise":
            raise ValueError("bad input")
        ok = completion == problem["reference"]
        return Verdict("correct" if ok else "incorrect", float(ok), ok, completion)


def test_order_kept_and_equal_to_sequential():
    items = [(f"#### {i % 7}", {"reference": str(i % 5)}) for i in range(200)]
    pooled, stats = score_pooled("gsm8k", items, workers=2, timeout_s=30)
    sequential = [GSM8KVerifier()(c, p) for c, p in items]
    assert pooled == sequential
    assert stats["items"] == 200 and stats["timeouts"] == 0 and stats["errors"] == 0


def test_timeouts_and_crashes_become_error_and_the_rest_is_graded():
    items = [("a", {"reference": "a"}), ("sleep:30", {"reference": "x"}), ("b", {"reference": "c"}),
             ("die", {"reference": "x"}), ("raise", {"reference": "x"}), ("c", {"reference": "c"})]
    started = time.monotonic()
    verdicts, stats = score_pooled(SleepyVerifier, items, workers=2, timeout_s=1.0, chunk_size=3)
    assert time.monotonic() - started < 15, "the hung item must be cut off by the pool"
    assert [v.verdict for v in verdicts] == ["correct", "error", "incorrect", "error", "error", "correct"]
    assert verdicts[1].details["error"] == "timeout"
    assert verdicts[3].details["error"] == "crash"
    assert "ValueError" in verdicts[4].details["error"]
    assert stats["timeouts"] == 1 and stats["crashes"] == 1 and stats["errors"] == 3


def test_empty_input():
    assert score_pooled("gsm8k", [], workers=2, timeout_s=1) == (
        [], {"items": 0, "workers": 2, "timeout_s": 1, "timeouts": 0, "crashes": 0, "restarts": 0,
             "errors": 0, "seconds": 0.0})
