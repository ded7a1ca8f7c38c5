"""`--rev REV` of `restem sql` and `restem audit`: the workspace files of a git revision or DVC experiment.

The needed files (tables, restem.json, metrics JSON; never checkpoints) are copied out of git and the DVC
cache into a temp folder through `dvc.api.DVCFileSystem`; nothing is checked out.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.refs import PATTERN as REF
from restem.workspace import (DATA, EVAL, ITERATION_METRICS, META_FILE, METRICS, MODELS, PROBLEMS, RATIONALE_SCORES,
                              RATIONALES, TABLES, VOTE_SCORES, VOTES, voters_data_dir)

# The files the views read, as the workspace lays them out (restem/workspace.py).
_WANTED = [
    re.compile(rf"^{PROBLEMS}/[^/]+\.parquet$"),
    re.compile(rf"^({DATA}|{EVAL})/iter{REF}/({'|'.join(TABLES)})\.parquet$"),
    re.compile(rf"^{DATA}/iter{REF}/({'|'.join(map(re.escape, (RATIONALES, RATIONALE_SCORES, VOTES, VOTE_SCORES)))})$"),
    re.compile(rf"^{voters_data_dir(Path())}/(samples|scores)\.parquet$"),
    re.compile(rf"^{MODELS}/iter{REF}/{re.escape(META_FILE)}$"),
    re.compile(rf"^{ITERATION_METRICS}/iter{REF}\.json$"),
]


def _git_root(start: Path) -> Path:
    for folder in [start.resolve(), *start.resolve().parents]:
        if (folder / ".git").exists():
            return folder
    raise RestemError(f"{start}: not inside a git repository; --rev needs the git+DVC project")


def wanted(path: str) -> bool:
    """Whether a repo-relative path is one of the files the views read."""
    return any(p.match(path) for p in _WANTED)


@contextmanager
def materialise_rev(root: Path, rev: str, only: Callable[[str], bool] = wanted,
                    tops: Sequence[str] = (DATA, MODELS, METRICS)) -> Iterator[Path]:
    """A temp folder holding the workspace files of `rev` (git revision or DVC experiment name): those of
    `wanted` (repo-relative paths), or of `only`, a narrower choice (`restem seeds report` reads metrics only),
    found below the folders `tops` (fewer tops: DVC outputs that are not needed are not even listed, so their
    absence from the cache does not matter).

    Reads through DVC's file system (git objects + DVC cache), so nothing is checked out; the
    folder is deleted on exit. Model checkpoints are never copied (only restem.json).
    """
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc_data.index import DataIndexDirError
    from scmrepo.exceptions import SCMError

    repo = _git_root(Path(root))
    prefix = Path(root).resolve().relative_to(repo).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    tmp = Path(tempfile.mkdtemp(prefix="restem-rev-"))
    try:
        try:
            fs = DVCFileSystem(repo=str(repo), rev=rev)
            copied = 0
            for top in tops:
                base = f"/{prefix}{top}"
                if not fs.exists(base):
                    continue
                for path in fs.find(base):
                    rel = path.lstrip("/")[len(prefix):]
                    if wanted(rel) and only(rel):
                        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                        fs.get_file(path, str(tmp / rel))
                        copied += 1
        except (DvcException, SCMError, DataIndexDirError, FileNotFoundError) as exc:  # the last two: outputs
            # whose data is in no cache (experiments fetched from another clone)
            raise RestemError(f"--rev {rev!r}: {exc}; give a git branch, tag, commit or a DVC experiment "
                              "name (`dvc exp list --all-commits`), and make sure its outputs are in the "
                              "DVC cache (`dvc pull --rev`/`dvc exp pull`)") from None
        if not copied:
            raise RestemError(f"--rev {rev!r}: no workspace tables at that revision; was `dvc repro` run "
                              "and committed there?")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
