"""Deterministic, atomic, schema-checked Parquet I/O for the tables in `restem.schemas.tables`.

Writes: rows are validated, sorted by the table's own key (its model's `SORT`, see `restem.schemas.tables`),
written with the explicit Arrow schema derived from the model, pinned compression and row-group size,
to a temp file that is renamed into place. Identical rows give identical bytes, so DVC skips downstream stages.
Reads: the file's schema must match the model's; a mismatch names the file and the column.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from restem.schemas.errors import RestemError

_PRIMITIVES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
ROW_GROUP_SIZE = 65_536
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
_UMASK = os.umask(0)
os.umask(_UMASK)


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {annotation}")
        return _arrow_type(args[0])[0], True
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        return _PRIMITIVES[type(values[0])], False
    if annotation in _PRIMITIVES:
        return _PRIMITIVES[annotation], False
    if origin is list:  # token ids
        (item,) = typing.get_args(annotation)
        return pa.list_(_PRIMITIVES[item]), False
    raise TypeError(f"no Arrow type for {annotation}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The explicit Arrow schema of a row model, in field order."""
    fields = []
    for name, info in model.model_fields.items():
        typ, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically, with sorted keys so equal values give equal bytes."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def sort_table(table: pa.Table, model: type[BaseModel]) -> pa.Table:
    """`table` in the row order of `model` (its `SORT` columns, ascending; a stable sort)."""
    sort_by: Sequence[str] = getattr(model, "SORT", ())
    if sort_by and table.num_rows:
        table = table.sort_by([(key, "ascending") for key in sort_by])
    return table


def to_table(model: type[BaseModel], rows: Iterable[BaseModel | dict]) -> pa.Table:
    """Validate rows against `model` and build an Arrow table with its explicit schema, in its row order."""
    schema = arrow_schema(model)
    records = []
    for i, row in enumerate(rows):
        if isinstance(row, BaseModel):
            records.append(row.model_dump())
        else:
            try:
                records.append(model.model_validate(row).model_dump())
            except ValidationError as exc:
                raise RestemError(f"row {i} does not fit {model.__name__}: {exc}") from exc
    return sort_table(pa.Table.from_pylist(records, schema=schema), model)


def write_table(path: Path, table: pa.Table) -> None:
    """Write an Arrow table as Parquet, deterministically and atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL,
            row_group_size=ROW_GROUP_SIZE,
            use_dictionary=True,
            write_statistics=True,
        )


def write_rows(path: Path, model: type[BaseModel], rows: Iterable[BaseModel | dict]) -> int:
    """Validate rows of `model`, sort them by its `SORT` and write them to `path`; returns the row count."""
    table = to_table(model, rows)
    write_table(path, table)
    return table.num_rows


def write_together(out_dir: Path, tables: dict[str, tuple[type[BaseModel], Iterable[BaseModel | dict]]]) -> None:
    """Write several tables of one folder (file name -> (row model, rows)) so that they appear together or not at
    all: staged in a hidden folder beside them, then each moved into place."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{'-'.join(Path(n).stem for n in tables)}"
    with atomic_dir(staging) as tmp:
        for name, (model, rows) in tables.items():
            write_rows(tmp / name, model, rows)
    for name in tables:
        (staging / name).replace(out_dir / name)
    staging.rmdir()


def read_table(path: Path, model: type[BaseModel]) -> pa.Table:
    """Read a Parquet file and check that its schema is the model's."""
    path = Path(path)
    if not path.exists():
        raise RestemError(f"{path}: file not found (run the stage that writes it, e.g. `dvc repro`)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RestemError(f"{path}: not a readable Parquet file ({exc})") from exc
    expected = arrow_schema(model)
    for field in expected:
        if field.name not in table.schema.names:
            raise RestemError(f"{path}: column `{field.name}` is missing (expected a {model.__name__} table)")
        got = table.schema.field(field.name).type
        if got != field.type:
            raise RestemError(f"{path}: column `{field.name}` has type {got}, expected {field.type}")
    extra = [n for n in table.schema.names if n not in expected.names]
    if extra:
        raise RestemError(f"{path}: unexpected columns {extra} in a {model.__name__} table")
    return table.select(expected.names).cast(expected)


def read_rows(path: Path, model: type[BaseModel]) -> list[dict]:
    """Read a table as a list of dicts (schema-checked)."""
    return read_table(path, model).to_pylist()


def record_unit(path: Path) -> str:
    """How a position in an input file is named in messages: `row` for Parquet, `line` for JSONL."""
    return "row" if Path(path).suffix == ".parquet" else "line"


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line or row number, record) for every record of a user's JSONL, JSONL.gz or Parquet file.

    Blank lines are skipped; a line that is not a JSON object is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise RestemError(f"{path}: file not found; give a JSONL, JSONL.gz or Parquet file")
    if path.suffix == ".parquet":
        try:
            return list(enumerate(pq.read_table(path).to_pylist(), start=1))
        except (pa.ArrowInvalid, OSError) as exc:
            raise RestemError(f"{path}: not a readable Parquet file ({exc})") from None
    opener = gzip.open if path.name.endswith(".gz") else open
    out = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RestemError(f"{path}: line {line_no} is not valid JSON ({exc.msg} at column {exc.colno}); "
                                      "fix or remove that line (one JSON object per line)") from None
                if not isinstance(record, dict):
                    raise RestemError(f"{path}: line {line_no} is a {type(record).__name__}, not a JSON object; "
                                      "each line must be an object with named fields")
                out.append((line_no, record))
    except (OSError, UnicodeDecodeError) as exc:
        raise RestemError(f"{path}: cannot read as UTF-8 JSONL ({exc}); give a .jsonl, .jsonl.gz or .parquet file") from None
    return out
