"""The data of the DVC plots drawn from the whole workspace (stage `plots`), from the audits' queries
(`restem.query.audits`) and the `metrics` view: `metrics/plots/accuracy.csv`, `filter.csv`, `solve_rates.csv`
and `audit_rates.csv`.

A plot definition in dvc.yaml names its CSV columns, so every column it names exists whatever the user's test
sets, iterations or filter outcomes: what varies with them (a test set, an iteration) is a value in a long
table (column `series`, drawn as one line each by template `.dvc/plots/lines_by_series.json`), never a column.
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

    - accuracy.csv: iteration (or step), test_set, metric, series ('<test_set> <metric>'), value: pass@1,
      pass@k and maj@k of every test set (metrics/iterations/)
    - filter.csv: iteration (or ReST step, e.g. 1b), kept, dropped_<reason>... (samples per outcome; `kept`
      always present, the plots draw only it)
    - solve_rates.csv: solve_rate (bin start, 0.0..1.0 in tenths), series (iter<i>), problems (grow problems
      per bin; 0 where an iteration has none)
    - audit_rates.csv: iteration, pass_at_1, pass_at_k, wrong_reasoning_rate, kept_wrong_reasoning_rate,
      distinct_paths, kept_precision (grow samples; a ReST step's row has only what its filter changes)
    """
    root = Path(root)
    out = root / "metrics" / "plots"
    con = connect(root)
    try:
        q = lambda sql: run_query(con, sql).to_pylist()  # noqa: E731
        written = [_write(out / "accuracy.csv", *_accuracy(q))]
        outcome = q("SELECT ref AS iteration, replace(replace(outcome, 'dropped: ', 'dropped_'), ' ', '_') AS outcome, "
                    f"samples FROM ({FILTER})")
        rows, cols = _wide(outcome, "iteration", "outcome", "samples", order=ref_order)
        cols += [] if "kept" in cols else ["kept"]  # a filter that kept nothing: still a column for the plot
        rows = [{"kept": 0} | r for r in rows]
        written.append(_write(out / "filter.csv", rows, cols))
        rates = q(f"""{PER_PROBLEM}
            SELECT least(floor(c / n * 10) / 10, 1.0) AS solve_rate, iteration, count(*) AS problems
            FROM per_problem WHERE purpose = 'grow' GROUP BY ALL""")
        written.append(_write(out / "solve_rates.csv", *_solve_rates(rates)))
        written.append(_write(out / "audit_rates.csv", *_audit_rates(con)))
    finally:
        con.close()
    return written


def _accuracy(q) -> tuple[list[dict], list[str]]:
    """pass@1 (greedy), pass@k and maj@k of every test set and model, in long form (metric names follow params)."""
    rows = q("SELECT ref AS iteration, subset AS test_set, metric, subset || ' ' || metric AS series, value "
             "FROM metrics WHERE subset IS NOT NULL AND regexp_full_match(metric, '(pass|maj)@[0-9]+')")
    rows.sort(key=lambda r: (ref_order(r["iteration"]), r["test_set"], _metric_order(r["metric"])))
    return rows, ["iteration", "test_set", "metric", "series", "value"]


def _metric_order(metric: str) -> tuple[int, int]:
    kind, k = metric.split("@")
    return (0 if kind == "pass" else 1), int(k)


def _solve_rates(rates: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per iteration and bin that any iteration has (0 where this one has no problem in it), so every
    line runs over the same x values; a bin no iteration reaches (e.g. 0.4 with 8 samples) is no point."""
    counts = {(r["solve_rate"], r["iteration"]): r["problems"] for r in rates}
    bins, iterations = sorted({r["solve_rate"] for r in rates}), sorted({r["iteration"] for r in rates})
    rows = [{"solve_rate": b, "series": f"iter{it}", "problems": counts.get((b, it), 0)}
            for it in iterations for b in bins]
    return rows, ["solve_rate", "series", "problems"]


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
