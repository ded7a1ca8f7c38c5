"""How `restem sql` and `restem audit` print a result: a rich table, CSV or JSON."""

from __future__ import annotations

import json
import sys

import pyarrow as pa

from restem.schemas.errors import RestemError

FORMATS = ("table", "csv", "json")


def check_format(fmt: str) -> None:
    """RestemError unless `fmt` is one of FORMATS."""
    if fmt not in FORMATS:
        raise RestemError(f"--format {fmt!r}: choose one of {list(FORMATS)}")


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render(table: pa.Table, fmt: str, max_rows: int = 200, out=None) -> None:
    """Write `table` to `out` (stdout) as a rich table, CSV or JSON (a list of records)."""
    out = out or sys.stdout
    if fmt == "csv":
        import csv

        # the csv module, not pyarrow's writer: pyarrow quotes every header name
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        for batch in table.to_batches():
            for row in batch.to_pylist():
                writer.writerow(["" if v is None else v for v in row.values()])
    elif fmt == "json":
        out.write(json.dumps(table.to_pylist(), default=str, ensure_ascii=False, indent=1) + "\n")
    elif fmt == "table":
        from rich.console import Console
        from rich.table import Table

        view = Table(*table.column_names, show_lines=False)
        for row in table.slice(0, max_rows).to_pylist():
            view.add_row(*(_cell(row[c]) for c in table.column_names))
        console = Console(file=out, width=200 if not out.isatty() else None)
        console.print(view)
        if table.num_rows > max_rows:
            console.print(f"({table.num_rows} rows, first {max_rows} shown; use --format csv for all)")
    else:
        check_format(fmt)
