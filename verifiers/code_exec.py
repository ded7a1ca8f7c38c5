"""Run untrusted Python programs in a sandbox, and the HumanEval and APPS verifiers built on it.

How it runs. A sandbox is one long-lived, pre-imported Python interpreter (the "zygote") inside an
isolation layer. For each program it forks a fresh child that makes a new session, moves into an
empty working folder, sets its resource limits, runs the program with `exec`, and ends. Forking a
warm interpreter costs about a millisecond, where starting `python` costs tens, which is where the
throughput comes from; `SandboxPool` runs one sandbox per CPU for parallelism.

Isolation layers, best first (`isolation_mode()`; `RESTEM_SANDBOX=bwrap|unshare|none` forces one):
  bwrap    bubblewrap: new PID, network, IPC and UTS namespaces, the host file system mounted
           read-only, a private /tmp (256 MiB) holding the working folder, /dev minimal, a fresh /proc,
           the sandbox killed when its parent dies. A folder other users cannot enter that holds the
           interpreter (e.g. /root with pyenv) is replaced by an empty tmpfs with only the interpreter's
           folders bound back, read-only.
  unshare  util-linux `unshare`: new PID, network, IPC, UTS and mount namespaces with a fresh /proc.
           The file system is the host's: a program can write where its user may (see below).
  none     plain processes: no network isolation, no file-system isolation; processes are still
           tracked and killed (subreaper), limits still apply.

What holds in every layer:
  - wall-clock limit (the zygote kills the child), CPU-time limit (RLIMIT_CPU), address space
    (RLIMIT_AS, default 2 GiB), file size (RLIMIT_FSIZE), open files, core dumps off, captured output
    capped (`Limits.output_bytes`);
  - a scrubbed environment (the sandbox starts from a fixed, minimal environment);
  - no process outlives its verdict: the zygote is a child subreaper, so every descendant of the
    program, including ones that call setsid or double-fork, is re-parented to it and killed
    (SIGKILL, repeated until none is left) before the result is sent;
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
import re
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
from typing import Any, Mapping, Optional, Sequence

from verifiers.base import Verdict

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


# ------------------------------------------------------------------------------------------ the zygote
# Runs inside the sandbox as `python -s -c _ZYGOTE <config json>`. Self-contained on purpose: importing
# this project there would load pydantic and friends into every forked program.
_ZYGOTE = r'''
import builtins, ctypes, gc, io, json, os, resource, select, shutil, signal, struct, sys, time, traceback
if sys.path and sys.path[0] in ("", "."):
    del sys.path[0]
for _name in ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
              "random", "fractions", "decimal", "statistics", "copy", "operator", "hashlib", "json", "datetime",
              "array", "queue", "unittest", "numbers", "abc", "dataclasses", "enum"):
    try:
        __import__(_name)
    except Exception:
        pass

CONF = json.loads(sys.argv[1])
# Where the interpreter's own files are unreadable to `nobody` and cannot be re-mounted (no bubblewrap),
# import what programs commonly use now, while still privileged; later imports of these hit sys.modules.
for _name in CONF.get("preload_more", []):
    try:
        __import__(_name)
    except Exception:
        pass
HEADER = struct.Struct(">I")
IN_FD, OUT_FD = os.dup(0), os.dup(1)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0); os.dup2(_null, 1)
os.close(_null)
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
LIBC = ctypes.CDLL(None, use_errno=True)
WORK = CONF["work"]


def setup():
    LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of programs come back to us
    os.makedirs(WORK, exist_ok=True)
    dropped = False
    if os.getuid() == 0 and CONF.get("drop", True):
        try:
            os.chown(WORK, CONF["nobody"], CONF["nobody"])
            os.setgroups([])
            os.setgid(CONF["nobody"])
            os.setuid(CONF["nobody"])
            dropped = True
        except OSError:
            pass  # a user namespace that maps only root: stay, the namespace still confines us
    LIBC.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: no ptrace or /proc/<pid>/mem by programs
    return {"pid": os.getpid(), "uid": os.getuid(), "dropped": dropped}


def read_exact(n):
    chunks = []
    while n:
        b = os.read(IN_FD, n)
        if not b:
            raise EOFError
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def send(obj):
    data = json.dumps(obj).encode()
    data = HEADER.pack(len(data)) + data
    while data:
        data = data[os.write(OUT_FD, data):]


def children():
    kids = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % tid) as f:
                kids.extend(int(x) for x in f.read().split())
        return kids
    except OSError:
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                            kids.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return kids


def sweep():
    """Kill every descendant: killed processes' children are re-parented to us, so repeat until none."""
    rounds = 0
    while True:
        kids = children()
        if not kids:
            return rounds
        rounds += 1
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def wipe(path):
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for name in entries:
        full = os.path.join(path, name)
        if full == WORK:
            continue
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)
        except OSError:
            pass


def set_limits(req):
    lim = req["limits"]
    cpu = int(max(1, -(-lim["cpu_s"] // 1)))
    pairs = [(resource.RLIMIT_AS, lim["memory_bytes"]), (resource.RLIMIT_FSIZE, lim["file_bytes"]),
             (resource.RLIMIT_NOFILE, lim["open_files"]), (resource.RLIMIT_CORE, 0)]
    for res, value in pairs:
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if os.getuid() != 0 or CONF.get("nproc_as_root"):
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))


def call_target(glb, name):
    if callable(glb.get(name)):
        return glb[name]
    cls = glb.get("Solution")
    if cls is not None:
        return getattr(cls(), name)
    raise NameError("no function or Solution method named %r" % name)


def child(req, nonce, wfd, rundir, iodir):
    try:
        os.setsid()
        os.chdir(rundir)
        stdin_path = os.path.join(iodir, "stdin") if req.get("stdin") is not None else os.devnull
        fd0 = os.open(stdin_path, os.O_RDONLY)
        fd1 = os.open(os.path.join(iodir, "stdout"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        fd2 = os.open(os.path.join(iodir, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for src, dst in ((fd0, 0), (fd1, 1), (fd2, 2)):
            os.dup2(src, dst)
        os.closerange(3, wfd)
        os.closerange(wfd + 1, 65536)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        set_limits(req)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace",
                                      line_buffering=True)
        sys.argv = ["program"]
        mode = req["mode"]
        glb = {"__name__": "__main__", "__builtins__": builtins}
        finished, value = False, None
        try:
            exec(compile(req["code"], "<program>", "exec"), glb)
            finished = True
        except SystemExit as exc:
            # A stdin/stdout program may end with exit(); a test program must reach its last line.
            finished = mode == "stdio" and exc.code in (None, 0)
            if not finished:
                sys.stderr.write("SystemExit(%r) before the end of the program\n" % (exc.code,))
        except BaseException:
            traceback.print_exc(limit=5)
        if finished and mode == "call":
            try:
                value = call_target(glb, req["fn_name"])(*req["args"])
                value = json.loads(json.dumps(value, default=repr))
            except BaseException:
                traceback.print_exc(limit=5)
                finished = False
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        if finished:
            data = json.dumps({"nonce": nonce, "value": value}).encode()
            while data:
                data = data[os.write(wfd, data):]
        os._exit(0 if finished else 1)
    except BaseException:
        os._exit(70)


def read_capped(path, cap):
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        return "", False
    return data[:cap].decode("utf-8", "replace"), len(data) > cap


def run(req):
    lim = req["limits"]
    rundir, iodir = os.path.join(WORK, "run"), os.path.join(WORK, "io")
    for d in (rundir, iodir):
        shutil.rmtree(d, ignore_errors=True)
        os.mkdir(d, 0o700)
    if req.get("stdin") is not None:
        with open(os.path.join(iodir, "stdin"), "w", encoding="utf-8") as f:
            f.write(req["stdin"])
    nonce = os.urandom(16).hex()
    rfd, wfd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        child(req, nonce, wfd, rundir, iodir)
    os.close(wfd)
    status, timed_out, payload = wait_child(pid, rfd, started + lim["timeout_s"], lim["output_bytes"])
    os.close(rfd)
    elapsed = time.monotonic() - started
    strays = sweep()
    out, out_cut = read_capped(os.path.join(iodir, "stdout"), lim["output_bytes"])
    err, _ = read_capped(os.path.join(iodir, "stderr"), 8192)
    for d in (rundir, iodir):
        shutil.rmtree(d, ignore_errors=True)
    for path in CONF.get("wipe", []):
        wipe(path)
    try:
        message = json.loads(payload.decode()) if payload else {}
    except ValueError:
        message = {}
    finished = message.get("nonce") == nonce and not timed_out
    result = {"finished": finished, "timed_out": timed_out, "value": message.get("value") if finished else None,
              "stdout": out, "stdout_truncated": out_cut, "stderr": err[-4000:], "seconds": round(elapsed, 4),
              "stray_rounds": strays}
    if os.WIFEXITED(status):
        result["exit_code"] = os.WEXITSTATUS(status)
    elif os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
    return result


def wait_child(pid, rfd, deadline, cap):
    """Wait for the child until `deadline`, draining the result pipe; kill its group on timeout."""
    payload, timed_out = bytearray(), False
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pass
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    rfd_open = True
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        wait_ms = min(left, 0.05 if pidfd is None else left) * 1000
        for fd, _ in poller.poll(max(1, int(wait_ms))):
            if fd == rfd and rfd_open:
                chunk = os.read(rfd, 65536)
                if not chunk:
                    poller.unregister(rfd)
                    rfd_open = False
                elif len(payload) < cap:
                    payload.extend(chunk)
    if pidfd is not None:
        os.close(pidfd)
    os.set_blocking(rfd, False)
    try:
        while len(payload) < cap:
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            payload.extend(chunk)
    except BlockingIOError:
        pass
    return status, timed_out, bytes(payload[:cap])


def main():
    hello = setup()
    # Move everything loaded so far out of the collector's reach: a child's collections then do not
    # touch (and copy) the zygote's pages, which keeps each fork cheap.
    gc.collect()
    gc.freeze()
    send({"hello": hello})
    while True:
        try:
            (n,) = HEADER.unpack(read_exact(4))
            req = json.loads(read_exact(n).decode())
        except EOFError:
            return
        try:
            send(run(req))
        except Exception as exc:
            sweep()
            send({"sandbox_error": "%s: %s" % (type(exc).__name__, exc)})


main()
'''

# --------------------------------------------------------------------------------------- host side


def _sandbox_env(home: str) -> dict[str, str]:
    """The whole environment a sandbox gets: nothing of the caller's (secrets stay out)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home,
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


def _probe(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20, env=_sandbox_env("/"))
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@lru_cache(maxsize=1)
def _bwrap_has_size() -> bool:
    try:
        text = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in (text.stdout + text.stderr)


def _python_dirs() -> list[str]:
    """Folders the sandboxed interpreter must read: its prefixes and every sys.path folder."""
    dirs = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    dirs.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(os.path.realpath(d) for d in dirs)


def _closed_ancestor(path: str) -> Optional[str]:
    """The outermost folder above `path` that other users cannot enter (e.g. /root), or None."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        folder = "/" + "/".join(parts[:i])
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return None
    return None


def _python_hidden_from_others() -> bool:
    return any(_closed_ancestor(d) for d in _python_dirs())


def _python_binds() -> list[str]:
    """bwrap arguments that make the interpreter readable by `nobody` when it lives under e.g. /root:
    an empty tmpfs over the closed folder (hiding the rest of it) and read-only binds of its folders."""
    args, masked = [], []
    for d in _python_dirs():
        top = _closed_ancestor(d)
        if top and top not in masked:
            masked.append(top)
            args += ["--tmpfs", top]
    bound: list[str] = []
    for d in _python_dirs():  # sorted, so a folder comes before the folders inside it
        top = next((t for t in masked if d.startswith(t + "/")), None)
        if top is None or any(d.startswith(b + "/") for b in bound):
            continue
        bound.append(d)
        args += ["--ro-bind", d, d]
        # bwrap creates the folders between the tmpfs and the bind as 0700; others must enter them.
        inner = d[len(top) + 1 :].split("/")[:-1]
        for i in range(1, len(inner) + 1):
            args += ["--chmod", "0755", top + "/" + "/".join(inner[:i])]
    return args


# What programs commonly import, loaded up front where the interpreter is hidden from `nobody`.
PRELOAD_MORE = ["cmath", "unicodedata", "zlib", "csv", "textwrap", "difflib", "pprint", "struct", "binascii",
                "base64", "calendar", "weakref", "types", "contextlib", "inspect", "xml.etree.ElementTree", "html",
                "urllib.parse", "collections.abc", "secrets", "uuid", "glob", "fnmatch", "tempfile", "pathlib",
                "platform", "locale", "codecs", "ast", "tokenize", "warnings", "logging", "argparse", "zipfile",
                "gzip", "bz2", "lzma", "pickle", "threading", "concurrent.futures", "hmac", "time", "io",
                "numpy"]


def _bwrap_prefix(sandbox_tmp: str) -> list[str]:
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try"]
    if os.getuid() != 0:
        argv.append("--unshare-user")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"] + _python_binds()
    if _bwrap_has_size():
        argv += ["--size", str(256 << 20)]
    argv += ["--tmpfs", sandbox_tmp]
    # An interpreter that lives under the sandbox's fresh tmpfs (a venv in /tmp) would vanish: bind it back.
    bound: list[str] = []
    for d in _python_dirs():
        if d.startswith(sandbox_tmp.rstrip("/") + "/") and not any(d.startswith(b + "/") for b in bound):
            bound.append(d)
            argv += ["--ro-bind", d, d]
    argv += ["--chdir", sandbox_tmp]
    return argv


def _unshare_prefix() -> list[str]:
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts"]
    if os.getuid() != 0:
        argv += ["--user", "--map-root-user"]
    return argv


@lru_cache(maxsize=1)
def isolation_mode() -> str:
    """The strongest isolation layer that works here: "bwrap", "unshare" or "none"."""
    forced = os.environ.get("RESTEM_SANDBOX", "").strip().lower()
    if forced in ("bwrap", "unshare", "none"):
        return forced
    if shutil.which("bwrap") and _probe(_bwrap_prefix("/tmp") + ["--", "true"]):
        return "bwrap"
    if shutil.which("unshare") and _probe(_unshare_prefix() + ["--", "true"]):
        return "unshare"
    return "none"


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
        python = sys.executable
        if self.mode == "bwrap":
            conf = {"work": "/tmp/work", "nobody": NOBODY, "wipe": ["/tmp", "/dev/shm"], "nproc_as_root": False}
            prefix = _bwrap_prefix("/tmp")
        else:
            self.host_dir = tempfile.mkdtemp(prefix="restem-sandbox-")
            os.chmod(self.host_dir, 0o755)
            conf = {"work": os.path.join(self.host_dir, "work"), "nobody": NOBODY, "wipe": []}
            if os.getuid() == 0 and _python_hidden_from_others():
                conf["preload_more"] = PRELOAD_MORE
            prefix = _unshare_prefix() if self.mode == "unshare" else []
        command = [python, "-s", "-c", _ZYGOTE, json.dumps(conf)]
        return (prefix + ["--"] + command if prefix else command), conf

    def _start(self) -> None:
        argv, conf = self._argv()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=_sandbox_env(conf["work"]), cwd="/",
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


# -------------------------------------------------------------------------------------------- verdicts


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
    version = "1+sandbox"

    def _grade(self, box: Sandbox, item: tuple[str, Mapping[str, Any]]) -> Verdict:
        return grade_humaneval(box, item, self.limits)


class AppsVerifier(_CodeVerifier):
    """APPS: stdin/stdout programs, or call-based when `fn_name` is given; all test cases must pass."""

    name = "apps"
    version = "1+sandbox"

    def _grade(self, box: Sandbox, item: tuple[str, Mapping[str, Any]]) -> Verdict:
        return grade_apps(box, item, self.limits)
