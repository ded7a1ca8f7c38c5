"""The sandbox's zygote: the program that runs inside the isolation layer (see `verifiers/sandbox.py`).

`Sandbox` starts it as `python -s -c <this file's text> <config json>`. It pre-imports common modules,
drops privileges, then for each request read from stdin forks a child that runs one program under
limits, kills whatever the program left running, clears what the program wrote, and answers on stdout
(4-byte big-endian length, then JSON). Standard library only, on purpose: importing this project here
would load pydantic and friends into every forked program. Importing it does nothing; `main()` acts.
"""

import builtins
import ctypes
import gc
import io
import json
import os
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import time
import traceback

HEADER = struct.Struct(">I")
# What most programs import: loaded once here, so a forked program finds them in sys.modules.
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
           "random", "fractions", "decimal", "statistics", "copy", "operator", "hashlib", "json", "datetime",
           "array", "queue", "unittest", "numbers", "abc", "dataclasses", "enum")

# Set by main(): the configuration, the request and answer pipes, libc, the working folder.
CONF: dict = {}
IN_FD = OUT_FD = -1
LIBC = None
WORK = ""


def preload(names):
    for name in names:
        try:
            __import__(name)
        except Exception:
            pass


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


def wipe(path, keep=()):
    """Remove what programs wrote inside `path` (folders in `keep` are emptied, not removed); return
    (entries removed, removals that failed).

    Stays on `path`'s own file system: a mount point below it (the read-only bind of a checkout or
    venv under /tmp) is never entered or touched, nor are the folders leading to it. So the cost is
    what programs wrote, wherever the interpreter lives. Iterative: no nesting depth can exhaust it.
    """
    try:
        device = os.lstat(path).st_dev
    except OSError:
        return 0, 0
    removed = failed = 0
    stack, folders, pinned = [path], [], set(keep)
    while stack:
        folder = stack.pop()
        folders.append(folder)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            entries = []
            try:  # a program's chmod 0 folder: it is ours (same user), open it up
                os.chmod(folder, 0o700)
                entries = list(os.scandir(folder))
            except OSError:
                pass
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                if info.st_dev != device:  # a mount point: leave it and the folders that lead to it
                    pinned.add(folder)
                elif stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                failed += 1
    for folder in reversed(folders[1:]):  # found after their parents, so removed before them
        try:
            if folder not in pinned:
                os.rmdir(folder)
                removed += 1
                continue
        except OSError:
            failed += 1
        pinned.add(os.path.dirname(folder))
    return removed, failed


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


def print_program_traceback():
    """The current exception's traceback from the program's first frame on: nothing of this file's
    shows, so verdict details do not change when this file does."""
    kind, exc, tb = sys.exc_info()
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":  # this file, run by -c
        tb = tb.tb_next
    traceback.print_exception(kind, exc, tb, limit=5)


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
            print_program_traceback()
        if finished and mode == "call":
            try:
                value = call_target(glb, req["fn_name"])(*req["args"])
                value = json.loads(json.dumps(value, default=repr))
            except BaseException:
                print_program_traceback()
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
    # Whatever else the program wrote: beside its run folder, and in the sandbox's own /tmp and /dev/shm.
    wiped = failed = 0
    for path in CONF["wipe"]:
        removed, failures = wipe(path, {WORK})
        wiped, failed = wiped + removed, failed + failures
    try:
        message = json.loads(payload.decode()) if payload else {}
    except ValueError:
        message = {}
    finished = message.get("nonce") == nonce and not timed_out
    result = {"finished": finished, "timed_out": timed_out, "value": message.get("value") if finished else None,
              "stdout": out, "stdout_truncated": out_cut, "stderr": err[-4000:], "seconds": round(elapsed, 4),
              "stray_rounds": strays, "wiped": wiped,
              "wipe_failed": failed}
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
    global CONF, IN_FD, OUT_FD, LIBC, WORK
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    preload(PRELOAD)
    CONF = json.loads(sys.argv[1])
    # Where the interpreter's own files are unreadable to `nobody` and cannot be re-mounted (no
    # bubblewrap), import what programs commonly use now, while still privileged.
    preload(CONF.get("preload_more", []))
    IN_FD, OUT_FD = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    LIBC = ctypes.CDLL(None, use_errno=True)
    WORK = CONF["work"]
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


if __name__ == "__main__":
    main()
