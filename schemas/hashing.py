"""Content hashes: the ids of problems, samples and models are hashes of what defines them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(*parts: Any, length: int = 16) -> str:
    """Hex sha256 of the canonical JSON of `parts`, cut to `length` characters."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()
    return digest[:length]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from `parts` (e.g. global seed, iteration, problem_id, sample index)."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_hash(folder: Path, skip: tuple[str, ...] = ("restem.json",), length: int = 16) -> str:
    """Hash of every file below `folder` (relative path and bytes), except the names in `skip`."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in skip):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(b"\0")
        h.update(file_hash(path).encode())
    return h.hexdigest()[:length]
