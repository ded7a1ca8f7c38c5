"""The data of the DVC plots drawn from the whole workspace (stage `plots`), from the audits' queries
(`restem.query.audits`): `metrics/plots/filter.csv`, `solve_rates.csv` and `audit_rates.csv`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from restem.schemas.io import write_text
from restem.schemas.refs import ref_order
from restem.query.audits import COVERAGE, DIVERSITY, FILTER, PER_PROBLEM, PRECISION, WRONG_REASONING
from restem.query.sql import connect, run_query


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _wide(rows: list[dict], key: str, column: str, value: str, fill=0, order=None) -> tuple[list[dict], list[str]]:
    """Long rows (key, column, value) as one row per key (sorted by `order`) with a column per distinct `column`."""
    columns = sorted({r[column] for r in rows})
    table: dict = {}
    for r in rows:
        table.setdefault(r[key], {key: r[key], **{c: fill for c in columns}})[r[column]] = r[value]
    return [table[k] for k in sorted(table, key=order)], [key, *columns]


def write_plot_data(root: Path = Path(".")) -> list[Path]:
    """Write the data of the DVC plots under `root/metrics/plots/`; returns the files written.

    - filter.csv: iteration (or ReST step, e.g. 1b), kept, dropped_<reason>... (samples per outcome)
    - solve_rates.csv: solve_rate (bin start, 0.0..1.0 in tenths), iter<i>... (grow problems per bin)
    - audit_rates.csv: iteration, pass_at_1, pass_at_k, wrong_reasoning_rate, kept_wrong_reasoning_rate,
      distinct_paths, kept_precision (grow samples; a ReST step's row has only what its filter changes)
    """
    root = Path(root)
    out = root / "metrics" / "plots"
    con = connect(root)
    try:
        q = lambda sql: run_query(con, sql).to_pylist()  # noqa: E731
        written = []
        outcome = q("SELECT ref AS iteration, replace(replace(outcome, 'dropped: ', 'dropped_'), ' ', '_') AS outcome, "
                    f"samples FROM ({FILTER})")
        rows, cols = _wide(outcome, "iteration", "outcome", "samples", order=ref_order)
        written.append(_write(out / "filter.csv", rows, cols))
        rates = q(f"""{PER_PROBLEM}
            SELECT least(floor(c / n * 10) / 10, 1.0) AS solve_rate, 'iter' || iteration AS iteration, count(*) AS problems
            FROM per_problem WHERE purpose = 'grow' GROUP BY ALL""")
        rows, cols = _wide(rates, "solve_rate", "iteration", "problems")
        written.append(_write(out / "solve_rates.csv", rows, cols))
        written.append(_write(out / "audit_rates.csv", *_audit_rates(con)))
    finally:
        con.close()
    return written


def _audit_rates(con) -> tuple[list[dict], list[str]]:
    by_ref: dict[str, dict] = {}  # keyed by ref: an iteration ('1') or a ReST step's filter ('1b')
    columns = ["iteration", "pass_at_1", "pass_at_k", "wrong_reasoning_rate", "kept_wrong_reasoning_rate",
               "distinct_paths", "kept_precision"]
    for sql, fields in ((COVERAGE, {"pass_at_1": "pass_at_1", "pass_at_k": "pass_at_k"}),
                        (WRONG_REASONING, {"rate": "wrong_reasoning_rate", "kept_rate": "kept_wrong_reasoning_rate"}),
                        (DIVERSITY, {"distinct_paths": "distinct_paths"}),
                        (PRECISION, {"kept_precision": "kept_precision"})):
        for r in run_query(con, sql).to_pylist():
            if r["purpose"] == "grow" and r["ref"] is not None:
                row = by_ref.setdefault(r["ref"], {c: "" for c in columns} | {"iteration": r["ref"]})
                row.update({ours: ("" if r[theirs] is None else r[theirs]) for theirs, ours in fields.items()})
    return [by_ref[k] for k in sorted(by_ref, key=ref_order)], columns


def _write(path: Path, rows: list[dict], columns: list[str]) -> Path:
    write_text(path, _csv(rows, columns))
    return path
