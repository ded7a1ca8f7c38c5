"""Run untrusted Python programs in a sandbox: `Sandbox` (one at a time), `SandboxPool` (in parallel).

How it runs. A sandbox is one long-lived, pre-imported Python interpreter (the "zygote",
`verifiers/_sandbox_zygote.py`) inside an isolation layer (`verifiers/isolation.py`). For each
program it forks a fresh child that makes a new session, moves into an empty working folder, sets its
resource limits, runs the program with `exec`, and ends. Forking a warm interpreter costs about a
millisecond, where starting `python` costs tens, which is where the throughput comes from;
`SandboxPool` runs one sandbox per CPU for parallelism.

What holds in every layer:
  - wall-clock limit (the zygote kills the child), CPU-time limit (RLIMIT_CPU), address space
    (RLIMIT_AS, default 2 GiB), file size (RLIMIT_FSIZE), open files, core dumps off, captured output
    capped (`Limits.output_bytes`);
  - a scrubbed environment (the sandbox starts from a fixed, minimal environment);
  - no process outlives its verdict: the zygote is a child subreaper, so every descendant of the
    program, including ones that call setsid or double-fork, is re-parented to it and killed
    (SIGKILL, repeated until none is left) before the result is sent;
  - no file outlives it in the sandbox's writable folders (the working folder; with bwrap also /tmp
    and /dev/shm): the zygote removes them before answering, without entering read-only binds;
  - when started as root, the zygote switches to user `nobody` and sets no_new_privs before running
    anything, so programs have no capabilities, cannot read root-only files (e.g. /root), and the
    process-count limit (RLIMIT_NPROC, which root ignores) stops fork storms. It also marks itself
    non-dumpable, so a program cannot ptrace it or read its memory through /proc;
  - a program that kills its parent (the zygote) only ends its own sandbox: the caller sees end of
    file, answers "sandbox_died" for that program and starts a fresh sandbox;
  - "passed" needs proof that the tests ran to the end: after the program's last statement returns
    (and, for APPS call-based tasks, after the function returned), the child writes a per-run random
    nonce to a private pipe. `sys.exit(0)`/`os._exit(0)` before that point is a failure.

What does not hold:
  - without bwrap: a program can write to world-writable host folders (/tmp, /var/tmp, /dev/shm) and,
    when the caller is not root, anywhere the caller's user may; without unshare or bwrap it can also
    use the network, see host processes, and (non-root caller) signal the caller's other processes;
  - read access: world-readable host files stay readable in every layer;
  - without bwrap, when the caller is root and the interpreter lives in a folder `nobody` cannot
    enter, programs can import only what the zygote pre-imported (`PRELOAD_MORE`);
  - a program written against this harness could find the nonce in its own process memory and fake
    completion. The nonce stops programs that exit early by accident or habit, not an adversary who
    targets this harness; kernel exploits are out of scope too.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Optional, Sequence

from restem.verifiers.verdict import Verdict
from restem.verifiers.isolation import (PRELOAD_MORE, SANDBOX_TMP, bwrap_prefix, isolation_mode, python_hidden_from_others,
                                 sandbox_env, unshare_prefix)

NOBODY = 65534
_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 64 << 20


@dataclass(frozen=True)
class Limits:
    """Per-program limits. CPU time defaults to the wall-clock limit."""

    timeout_s: float = 5.0
    cpu_s: Optional[float] = None
    memory_bytes: int = 2 << 30
    file_bytes: int = 16 << 20
    output_bytes: int = 1 << 20
    processes: int = 64
    open_files: int = 256


@lru_cache(maxsize=1)
def zygote_source() -> str:
    """The zygote's program text, shipped in this package and passed to `python -c`."""
    return resources.files(__package__).joinpath("_sandbox_zygote.py").read_text(encoding="utf-8")


class SandboxDied(Exception):
    """The sandbox process ended or stopped answering."""


class Sandbox:
    """One zygote inside one isolation layer. Not thread-safe: one program at a time.

    Start and restart it from a thread that lives as long as it does: bwrap's --die-with-parent
    follows the thread that started it.
    """

    def __init__(self, mode: Optional[str] = None, start_timeout_s: float = 60.0):
        self.mode = mode or isolation_mode()
        self.start_timeout_s = start_timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self.host_dir: Optional[str] = None
        self.restarts = 0
        self.hello: dict = {}
        self._start()

    def _argv(self) -> tuple[list[str], dict]:
        if self.mode == "bwrap":
            work = os.path.join(SANDBOX_TMP, "work")
            conf = {"work": work, "nobody": NOBODY, "wipe": [SANDBOX_TMP, "/dev/shm"], "nproc_as_root": False}
            prefix = bwrap_prefix()
        else:
            self.host_dir = tempfile.mkdtemp(prefix="restem-sandbox-")
            os.chmod(self.host_dir, 0o755)
            work = os.path.join(self.host_dir, "work")
            conf = {"work": work, "nobody": NOBODY, "wipe": [work]}
            if os.getuid() == 0 and python_hidden_from_others():
                conf["preload_more"] = PRELOAD_MORE
            prefix = unshare_prefix() if self.mode == "unshare" else []
        command = [sys.executable, "-s", "-c", zygote_source(), json.dumps(conf)]
        return (prefix + ["--"] + command if prefix else command), conf

    def _start(self) -> None:
        argv, conf = self._argv()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=sandbox_env(conf["work"]), cwd="/",
                                     start_new_session=True, close_fds=True)
        self.hello = self._receive(time.monotonic() + self.start_timeout_s).get("hello", {})

    def _receive(self, deadline: float) -> dict:
        head = self._read_exact(4, deadline)
        (n,) = _HEADER.unpack(head)
        if n > _MAX_MESSAGE:
            raise SandboxDied(f"reply of {n} bytes")
        return json.loads(self._read_exact(n, deadline).decode())

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        chunks = []
        while n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SandboxDied("no answer in time")
            chunk = os.read(fd, n)
            if not chunk:
                raise SandboxDied("sandbox ended")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def run(self, code: str, limits: Limits, mode: str = "test", stdin: Optional[str] = None,
            fn_name: Optional[str] = None, args: Optional[list] = None) -> dict:
        """Run one program. mode: "test" (must reach its end), "stdio" (exit(0) allowed) or "call".

        Returns finished (the nonce came back), timed_out, exit_code or signal, stdout (capped),
        stderr (tail), value (call mode), seconds; or sandbox_died / sandbox_error with a reason.
        """
        cpu = limits.cpu_s if limits.cpu_s is not None else limits.timeout_s
        req = {"code": code, "mode": mode, "stdin": stdin, "fn_name": fn_name, "args": args or [],
               "limits": {**asdict(limits), "cpu_s": cpu}}
        data = json.dumps(req).encode()
        try:
            if self.proc is None:  # an earlier restart failed: try once more
                self._start()
        except (SandboxDied, OSError, ValueError) as exc:
            return {"finished": False, "sandbox_error": f"sandbox does not start: {exc}"}
        try:
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)
            self.proc.stdin.flush()
            # The zygote enforces the program's limit; this outer one catches a wedged sandbox.
            return self._receive(time.monotonic() + limits.timeout_s + 30.0)
        except (SandboxDied, OSError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
        try:
            self.restart()
        except (SandboxDied, OSError, ValueError) as exc:
            self.kill()
            return {"finished": False, "sandbox_error": f"sandbox died ({reason}) and does not restart: {exc}"}
        return {"finished": False, "sandbox_died": reason}

    def restart(self) -> None:
        self.kill()
        self.restarts += 1
        self._start()

    def kill(self, grace_s: float = 1.0) -> None:
        """End the sandbox and everything in it; remove its host folder.

        First the polite way (end of input: the zygote exits and bwrap reaps its own helpers, so no
        zombie is left to the host's init), then SIGKILL to the whole group after `grace_s`.
        """
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.host_dir:
            shutil.rmtree(self.host_dir, ignore_errors=True)
            self.host_dir = None


class SandboxPool:
    """`workers` sandboxes, each owned by one thread; `map` runs jobs in parallel, keeping order."""

    def __init__(self, workers: Optional[int] = None, mode: Optional[str] = None):
        self.workers = workers or _cpu_count()
        self.mode = mode or isolation_mode()
        self.jobs: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.sandboxes: list[Optional[Sandbox]] = [None] * self.workers
        ready = threading.Barrier(self.workers + 1)
        self.start_errors: list[str] = []
        for k in range(self.workers):
            t = threading.Thread(target=self._serve, args=(k, ready), daemon=True, name=f"sandbox-{k}")
            t.start()
            self.threads.append(t)
        ready.wait()

    def _serve(self, k: int, ready: threading.Barrier) -> None:
        try:
            self.sandboxes[k] = Sandbox(self.mode)
        except Exception as exc:  # noqa: BLE001 - reported through every job this pool is given
            self.start_errors.append(f"{type(exc).__name__}: {exc}")
        ready.wait()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, arg, slot, results, done = job
            try:
                box = self.sandboxes[k]
                results[slot] = fn(box, arg) if box is not None else _sandbox_error(self.start_errors)
            except Exception as exc:  # noqa: BLE001 - a verifier bug must not hang the pool
                results[slot] = Verdict("error", 0.0, None, None, None, {"error": f"{type(exc).__name__}: {exc}"})
            done.release()

    def map(self, fn, args: Sequence[Any]) -> list:
        """[fn(sandbox, a) for a in args], run on the pool's sandboxes in parallel, in input order."""
        results: list = [None] * len(args)
        done = threading.Semaphore(0)
        for slot, arg in enumerate(args):
            self.jobs.put((fn, arg, slot, results, done))
        for _ in args:
            done.acquire()
        return results

    def restarts(self) -> int:
        return sum(box.restarts for box in self.sandboxes if box is not None)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join(timeout=10)
        for box in self.sandboxes:
            if box is not None:
                box.kill()


def _sandbox_error(errors: list[str]) -> Verdict:
    return Verdict("error", 0.0, None, None, None, {"error": "sandbox failed to start", "message": "; ".join(errors)})


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


_shared: Optional[SandboxPool] = None
_shared_lock = threading.Lock()


def shared_pool() -> SandboxPool:
    """A process-wide pool for verifiers called one sample at a time; closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SandboxPool()
            atexit.register(_shared.close)
        return _shared
