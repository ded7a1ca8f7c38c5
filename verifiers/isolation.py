"""Isolation layers for the code sandbox: the command line that confines its interpreter.

Layers, best first (`isolation_mode()`; `RESTEM_SANDBOX=bwrap|unshare|none` forces one):
  bwrap    bubblewrap: new PID, network, IPC and UTS namespaces, the host file system mounted
           read-only, a private /tmp (256 MiB) holding the working folder, /dev minimal, a fresh /proc,
           the sandbox killed when its parent dies. A folder other users cannot enter that holds the
           interpreter (e.g. /root with pyenv) is replaced by an empty tmpfs with only the interpreter's
           folders bound back, read-only. Interpreter folders that live under the fresh /tmp or /dev (a
           checkout or venv in /tmp) are bound back read-only at their own paths; the zygote's wipe of
           /tmp stays off those binds (it never leaves the tmpfs's own file system).
  unshare  util-linux `unshare`: new PID, network, IPC, UTS and mount namespaces with a fresh /proc.
           The file system is the host's: a program can write where its user may.
  none     plain processes: no network isolation, no file-system isolation; processes are still
           tracked and killed (subreaper), limits still apply.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import lru_cache
from typing import Optional

SANDBOX_TMP = "/tmp"
# Mounted fresh inside a bwrap sandbox, hiding the host's folders there.
_FRESH_MOUNTS = (SANDBOX_TMP, "/dev")

# What programs commonly import, loaded up front where the interpreter is hidden from `nobody`.
PRELOAD_MORE = ["cmath", "unicodedata", "zlib", "csv", "textwrap", "difflib", "pprint", "struct", "binascii",
                "base64", "calendar", "weakref", "types", "contextlib", "inspect", "xml.etree.ElementTree", "html",
                "urllib.parse", "collections.abc", "secrets", "uuid", "glob", "fnmatch", "tempfile", "pathlib",
                "platform", "locale", "codecs", "ast", "tokenize", "warnings", "logging", "argparse", "zipfile",
                "gzip", "bz2", "lzma", "pickle", "threading", "concurrent.futures", "hmac", "time", "io",
                "numpy"]


def sandbox_env(home: str) -> dict[str, str]:
    """The whole environment a sandbox gets: nothing of the caller's (secrets stay out)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home,
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


def _probe(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20, env=sandbox_env("/"))
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


def python_hidden_from_others() -> bool:
    return any(_closed_ancestor(d) for d in _python_dirs())


def _binds_below(tops: list[str]) -> list[str]:
    """bwrap arguments that bind the interpreter's folders lying below one of `tops` (fresh, empty
    mounts) back, read-only, at their own paths. bwrap creates the folders between a top and a bind
    as 0700; they are opened to 0755 so that `nobody` can reach the bind."""
    args: list[str] = []
    bound: list[str] = []
    for d in _python_dirs():  # sorted, so a folder comes before the folders inside it
        top = next((t.rstrip("/") for t in tops if d.startswith(t.rstrip("/") + "/")), None)
        if top is None or any(d.startswith(b + "/") for b in bound):
            continue
        bound.append(d)
        args += ["--ro-bind", d, d]
        inner = d[len(top) + 1 :].split("/")[:-1]
        for i in range(1, len(inner) + 1):
            args += ["--chmod", "0755", top + "/" + "/".join(inner[:i])]
    return args


def _python_binds() -> list[str]:
    """bwrap arguments that make the interpreter readable by `nobody` when it lives under e.g. /root:
    an empty tmpfs over the closed folder (hiding the rest of it) and read-only binds of its folders."""
    masked: list[str] = []
    for d in _python_dirs():
        top = _closed_ancestor(d)
        if top and top not in masked:
            masked.append(top)
    return [a for top in masked for a in ("--tmpfs", top)] + _binds_below(masked)


def bwrap_prefix() -> list[str]:
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try"]
    if os.getuid() != 0:
        argv.append("--unshare-user")
    argv += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"] + _python_binds()
    if _bwrap_has_size():
        argv += ["--size", str(256 << 20)]
    argv += ["--tmpfs", SANDBOX_TMP]
    # An interpreter folder under a fresh mount (a venv or checkout in /tmp) would vanish: bind it back.
    argv += _binds_below(list(_FRESH_MOUNTS))
    argv += ["--chdir", SANDBOX_TMP]
    return argv


def unshare_prefix() -> list[str]:
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
    if shutil.which("bwrap") and _probe(bwrap_prefix() + ["--", "true"]):
        return "bwrap"
    if shutil.which("unshare") and _probe(unshare_prefix() + ["--", "true"]):
        return "unshare"
    return "none"
