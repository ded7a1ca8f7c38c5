"""Batch grading in worker processes with a hard per-sample timeout that the pool enforces.

Each worker owns one verifier and grades items one by one, sending each verdict back as soon as it is
ready. The parent gives every item `timeout_s` seconds from the moment it becomes the worker's current
item; when that passes, the worker is killed (SIGKILL) and replaced, the item gets the verdict `error`
with details saying why, and the rest of the worker's chunk is handed out again. A worker that dies
(segfault, out of memory) is handled the same way. No `signal.alarm` anywhere: it works only in the
main thread and silently zeroes runs when a library swallows the exception.

Output order is input order; the verdict of an item depends only on the item (and, for items close
to the time limit, on machine load).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from restem.verifiers.base import Verdict, Verifier, error_verdict, get_verifier

Item = tuple[str, Mapping[str, Any]]
# A registered verifier name, or a picklable zero-argument factory (a class defined at module level).
VerifierSpec = Union[str, Callable[[], Verifier]]
DEFAULT_MEMORY_BYTES = 4 << 30
# Modules the fork server imports once so that every new worker starts with them loaded.
_PRELOAD = ["restem.verifiers.base", "restem.verifiers.math_answer", "math_verify", "sympy"]


def _context() -> mp.context.BaseContext:
    """A fork server (fast, safe with threads in the parent) where the OS has one, else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


def _worker_main(conn: Connection, verifier_spec: VerifierSpec, memory_bytes: int) -> None:
    """Worker loop: receive a chunk of (index, item), send (index, Verdict) per item; None ends it."""
    if memory_bytes > 0:
        # A runaway sympy expansion should fail with MemoryError here, not take the machine down.
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    verifier = _make(verifier_spec)
    while True:
        chunk = conn.recv()
        if chunk is None:
            return
        for index, (completion, problem) in chunk:
            try:
                verdict = verifier(completion, problem)
            except Exception as exc:  # noqa: BLE001 - every failure must show as `error`
                verdict = error_verdict(exc)
            conn.send((index, verdict))


@dataclass
class _Slot:
    """One worker process and the items it holds (first = the one being graded now)."""

    process: Any
    conn: Connection
    pending: deque = field(default_factory=deque)
    deadline: float = float("inf")


def _make(spec: VerifierSpec) -> Verifier:
    return get_verifier(spec) if isinstance(spec, str) else spec()


def _failure(kind: str, message: str) -> Verdict:
    return Verdict("error", 0.0, None, None, None, {"error": kind, "message": message})


class _Pool:
    def __init__(self, verifier_name: VerifierSpec, items: Sequence[Item], workers: int, timeout_s: float,
                 chunk_size: int, memory_bytes: int):
        self.verifier_name, self.items, self.timeout_s = verifier_name, items, timeout_s
        self.memory_bytes = memory_bytes
        self.ctx = _context()
        self.todo: deque = deque(range(len(items)))
        self.results: list[Optional[Verdict]] = [None] * len(items)
        self.chunk_size = chunk_size
        self.stats = {"items": len(items), "workers": workers, "timeout_s": timeout_s,
                      "timeouts": 0, "crashes": 0, "restarts": 0}
        self.slots = [self._start() for _ in range(max(1, min(workers, len(items))))]

    def _start(self) -> _Slot:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, self.verifier_name, self.memory_bytes), daemon=True)
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def _feed(self, slot: _Slot) -> None:
        if slot.pending or not self.todo:
            return
        take = [self.todo.popleft() for _ in range(min(self.chunk_size, len(self.todo)))]
        slot.pending.extend(take)
        slot.conn.send([(i, self.items[i]) for i in take])
        slot.deadline = time.monotonic() + self.timeout_s

    def _replace(self, slot: _Slot, verdict: Verdict) -> _Slot:
        """Record `verdict` for the slot's current item, requeue the rest, kill and restart the worker."""
        current = slot.pending.popleft()
        self.results[current] = verdict
        self.todo.extendleft(reversed(slot.pending))
        slot.process.kill()
        slot.process.join()
        slot.conn.close()
        self.stats["restarts"] += 1
        return self._start()

    def _receive(self, slot: _Slot) -> _Slot:
        try:
            index, verdict = slot.conn.recv()
        except (EOFError, OSError):
            slot.process.join(timeout=1.0)
            self.stats["crashes"] += 1
            code = slot.process.exitcode
            return self._replace(slot, _failure("crash", f"worker died (exit code {code}) while grading"))
        self.results[index] = verdict
        slot.pending.remove(index)
        slot.deadline = time.monotonic() + self.timeout_s
        return slot

    def run(self) -> list[Verdict]:
        for slot in self.slots:
            self._feed(slot)
        while any(slot.pending for slot in self.slots):
            busy = [s for s in self.slots if s.pending]
            wait_s = max(0.0, min(s.deadline for s in busy) - time.monotonic())
            ready = set(wait([s.conn for s in busy], timeout=wait_s))
            now = time.monotonic()
            for k, slot in enumerate(self.slots):
                if not slot.pending:
                    continue
                if slot.conn in ready:
                    slot = self._receive(slot)
                elif now >= slot.deadline:
                    self.stats["timeouts"] += 1
                    slot = self._replace(slot, _failure("timeout", f"no verdict within {self.timeout_s}s; worker killed"))
                self.slots[k] = slot
                self._feed(slot)
        return [r for r in self.results]  # every index was filled before the loop ended

    def close(self) -> None:
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except OSError:
                pass
        for slot in self.slots:
            slot.process.join(timeout=2.0)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
            slot.conn.close()


def score_pooled(verifier_name: VerifierSpec, items: Sequence[Item], workers: int = 2, timeout_s: float = 10.0,
                 chunk_size: int = 32, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> tuple[list[Verdict], dict]:
    """Grade `items` ((completion, problem) pairs) with verifier `verifier_name` in `workers` processes.

    `verifier_name` is a registered name (`get_verifier`) or a picklable zero-argument factory.

    Returns the verdicts in input order and stats: items, workers, timeout_s, timeouts, crashes,
    restarts, errors (verdicts `error`, timeouts and crashes included) and seconds.
    """
    _make(verifier_name)  # an unknown name fails here, in the caller, with the list of names
    started = time.monotonic()
    items = list(items)
    if not items:
        return [], {"items": 0, "workers": workers, "timeout_s": timeout_s, "timeouts": 0, "crashes": 0,
                    "restarts": 0, "errors": 0, "seconds": 0.0}
    pool = _Pool(verifier_name, items, workers, timeout_s, chunk_size, memory_bytes)
    try:
        verdicts = pool.run()
    finally:
        pool.close()
    stats = dict(pool.stats)
    stats["errors"] = sum(v.verdict == "error" for v in verdicts)
    stats["seconds"] = round(time.monotonic() - started, 3)
    return verdicts, stats


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
