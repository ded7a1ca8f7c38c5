"""`restem sql "QUERY"`: DuckDB over every table of every iteration of a workspace.

Views (documented in `restem/query/views.py`, printed by `restem sql --schema`):
  problems, samples (grow, eval, the agreement filter's voters, rationalize's hinted samples), scores (with
  `purpose`), kept, rejected, pass_rates (per problem and iteration, from score), budget (Grow's per-problem
  budget), models (the
  `restem.json` files), metrics (the per-iteration JSON, one row per number), and `graded`
  (samples joined with their scores, whether kept and why dropped).
Functions: `reasoning_path(completion)` (Python: `restem.verifiers.paths`, the filter's rule: the sequence of
equations of a solution), `is_reward_model(verifier)` (SQL macro), `text_steps_valid(completion)`
(Python: `restem.verifiers.steps`), `auc(scores, labels)` (Python: `restem.stats`, the reward model's AUC).

Parquet files are read in place (nothing is loaded until a query needs it), so queries over
millions of rows stream. `--rev REV` reads a git revision or DVC experiment instead of the working
tree (`restem.query.rev` copies its files out); `restem.query.output` prints the result.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pyarrow as pa
import typer

from restem.cli.errors import user_errors
from restem.schemas.errors import RestemError
from restem.schemas.io import arrow_schema
from restem.schemas.refs import Ref
from restem.schemas.tables import Budget, Kept, PassRate, Problem, Rejected, Sample, Score
from restem.query.output import check_format, render
from restem.query.rev import materialise_rev
from restem.query.views import GRADED_SCORE_COLUMNS, METRICS_SCHEMA, MODELS_SCHEMA, schema_doc
from restem.workspace import (DATA, EVAL, ITERATION_METRICS, META_FILE, MODELS, RATIONALE_SCORES, RATIONALES,
                              VOTE_SCORES, VOTES, problems_dir, voters_data_dir)

EXAMPLES = """\
restem sql "SELECT iteration, purpose, count(*) FROM samples GROUP BY ALL ORDER BY ALL"
restem sql "SELECT iteration, avg(correct::int) AS accuracy FROM scores WHERE purpose='grow' GROUP BY 1 ORDER BY 1"
restem sql "SELECT iteration, subset, value FROM metrics WHERE metric='pass@1' ORDER BY 1, 2" --format csv
restem sql "SELECT p.prompt, s.completion FROM graded s JOIN problems p USING (problem_id)
            WHERE s.correct AND s.steps_valid = false LIMIT 5"
restem sql "SELECT filter_reason, count(*) FROM rejected GROUP BY 1" --rev my-experiment
restem sql "SELECT ref, count(*) AS kept, min(threshold) AS tau FROM kept GROUP BY ref ORDER BY ref"
"""


# ----------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Workspace:
    """The files of a workspace, by view (each a list of (iteration or step ref, or None, path))."""

    root: Path
    files: dict[str, list[tuple[Optional[Ref], Path]]]

    def has_data(self) -> bool:
        return any(self.files.values())


def _iter_files(folder: Path, name: str) -> list[tuple[Optional[Ref], Path]]:
    """(ref, folder/iter<ref>/name) for every iteration or step folder that has the file, in run order."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        ref = Ref.from_folder(child.name)
        if ref is not None and (child / name).is_file():
            found.append((ref, child / name))
    return sorted(found)


def _one_file(path: Path) -> list[tuple[Optional[Ref], Path]]:
    return [(None, path)] if path.is_file() else []


def discover(root: Path) -> Workspace:
    """Every table file under `root` (a workspace laid out as `dvc repro` writes it: restem/workspace.py)."""
    root = Path(root)
    data, problems_folder, metrics_dir = root / DATA, problems_dir(root), root / ITERATION_METRICS
    problems = sorted(problems_folder.glob("*.parquet")) if problems_folder.is_dir() else []
    metrics = sorted(
        (Ref.from_folder(p.stem), p) for p in metrics_dir.glob("iter*.json") if Ref.from_folder(p.stem)
    ) if metrics_dir.is_dir() else []
    return Workspace(root, {
        "problems": [(None, p) for p in problems],
        "samples_grow": _iter_files(data, "samples.parquet"),
        "samples_eval": _iter_files(root / EVAL, "samples.parquet"),
        # the voters as built (iteration 0), then the co-improving voters' answers per iteration
        "samples_vote": _one_file(voters_data_dir(root) / "samples.parquet") + _iter_files(data, VOTES),
        "scores_vote": _one_file(voters_data_dir(root) / "scores.parquet") + _iter_files(data, VOTE_SCORES),
        "scores_grow": _iter_files(data, "scores.parquet"),
        "scores_eval": _iter_files(root / EVAL, "scores.parquet"),
        "samples_rationale": _iter_files(data, RATIONALES),
        "scores_rationale": _iter_files(data, RATIONALE_SCORES),
        "kept": _iter_files(data, "kept.parquet"),
        "rejected": _iter_files(data, "rejected.parquet"),
        "pass_rates": _iter_files(data, "pass_rates.parquet"),
        "budget": _iter_files(data, "budget.parquet"),
        "models": _iter_files(root / MODELS, META_FILE),
        "metrics": metrics,
    })


# -------------------------------------------------------------------------------------- small tables


def _json_file(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RestemError(f"{path}: not readable JSON ({exc}); rerun the stage that writes it (`dvc repro`)") from None


def _ref_of(meta: dict, found: Ref, path: Path) -> Ref:
    """The ref a restem.json or metrics JSON names (`iteration`: 1 or '1b'), else its folder's."""
    try:
        return Ref.parse(meta.get("iteration", found))
    except ValueError:
        raise RestemError(f"{path}: `iteration` is {meta.get('iteration')!r}, neither an iteration number nor a "
                          "step key like '1b'; rerun the stage that writes it (`dvc repro`)") from None


def models_table(files: list[tuple[Optional[Ref], Path]]) -> pa.Table:
    """One row per restem.json: its fields, params as JSON text, the length and last loss of its log, and what
    stopped its training early (the loss target), if anything."""
    rows = []
    for found, path in files:
        meta = _json_file(path)
        log = meta.get("train_log") or []
        ref = _ref_of(meta, found, path)
        rows.append({
            "iteration": ref.iteration, "ref": str(ref), "model_hash": meta.get("model_hash"),
            "parent": meta.get("parent"), "checkpoint": meta.get("checkpoint"),
            "training_data": meta.get("training_data"),
            "params": json.dumps(meta.get("params") or {}, sort_keys=True),
            "train_steps": log[-1].get("step") if log else None,
            "final_loss": log[-1].get("loss") if log else None,
            "environment": json.dumps(meta.get("environment") or {}, sort_keys=True), "path": str(path),
            "stopped_by": log[-1].get("stop") if log else None,
            "stop_epoch": log[-1].get("epoch") if log and log[-1].get("stop") else None,
        })
    return pa.Table.from_pylist(rows, schema=MODELS_SCHEMA)


def _metric_rows(ref: Ref, model: Optional[str], subset: Optional[str], values: dict) -> list[dict]:
    return [{"iteration": ref.iteration, "ref": str(ref), "model": model, "subset": subset, "metric": k,
             "value": float(v)}
            for k, v in sorted(values.items()) if isinstance(v, (int, float)) and not isinstance(v, bool)]


def metrics_table(files: list[tuple[Optional[Ref], Path]]) -> pa.Table:
    """The per-iteration metrics JSON in long form: (iteration, model, subset, metric, value).

    Long form because metric names depend on params (`pass@8`, `maj@8`) and must not change the schema.
    """
    rows: list[dict] = []
    for found, path in files:
        m = _json_file(path)
        it, model = _ref_of(m, found, path), m.get("model")
        rows += _metric_rows(it, model, None, m)
        for subset, values in sorted((m.get("test") or {}).items()):
            if isinstance(values, dict):
                rows += _metric_rows(it, model, subset, values)
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


# ------------------------------------------------------------------------------------------ views


def _quote(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _parquet_source(con, name: str, files: list[tuple[Optional[Ref], Path]], schema: pa.Schema,
                    with_ref: bool = True) -> str:
    """SQL that reads `files` with the table's columns, and (`with_ref`) each file's ref ('1', '1b'; NULL
    for a file of no iteration) as column `ref`; an empty table of that shape when there are no files."""
    columns = ", ".join(f'"{f.name}"' for f in schema)
    ref = ", NULL::VARCHAR AS ref" if with_ref else ""
    if not files:
        con.register(f"_empty_{name}", schema.empty_table())
        return f"SELECT {columns}{ref} FROM _empty_{name}"
    if not with_ref:
        paths = ", ".join(_quote(p.as_posix()) for _, p in files)
        return f"SELECT {columns} FROM read_parquet([{paths}], union_by_name = true)"
    # one scan per ref, each naming its ref: a step's rows (kept of '1b') carry its iteration's number
    by_ref: dict[Optional[Ref], list[Path]] = {}
    for r, p in files:
        by_ref.setdefault(r, []).append(p)
    return " UNION ALL ".join(
        f"SELECT {columns}, {'NULL::VARCHAR' if r is None else _quote(str(r))} AS ref "
        f"FROM read_parquet([{', '.join(_quote(p.as_posix()) for p in paths)}], union_by_name = true)"
        for r, paths in by_ref.items())


_MACROS = [
    "CREATE OR REPLACE MACRO is_reward_model(v) AS starts_with(v, 'rm:')",
]


def _reasoning_path(completions: pa.Array) -> pa.Array:
    from restem.verifiers.paths import reasoning_paths  # the filter's `dedup: equations` rule, the same function

    return pa.array(reasoning_paths(completions.to_pylist()), type=pa.string())


def _text_steps_valid(completions: pa.Array) -> pa.Array:
    from restem.verifiers.steps import steps_valid_many

    return pa.array(steps_valid_many(completions.to_pylist()), type=pa.bool_())


def _text_step_errors(completions: pa.Array) -> pa.Array:
    from restem.verifiers.steps import step_errors

    return pa.array([("; ".join(step_errors(t)) or None) if t is not None else None
                     for t in completions.to_pylist()], type=pa.string())


def create_views(con, ws: Workspace) -> None:
    """Create every view of `restem.query.views.VIEWS` in the DuckDB connection `con`."""
    f = ws.files
    score_cols = ", ".join(f'"{n}"' for n in arrow_schema(Score).names)
    con.execute(f"CREATE OR REPLACE VIEW problems AS "
                f"{_parquet_source(con, 'problems', f['problems'], arrow_schema(Problem), with_ref=False)}")
    con.execute(f"""CREATE OR REPLACE VIEW samples AS
        {_parquet_source(con, 'samples_grow', f['samples_grow'], arrow_schema(Sample))}
        UNION ALL {_parquet_source(con, 'samples_eval', f['samples_eval'], arrow_schema(Sample))}
        UNION ALL {_parquet_source(con, 'samples_vote', f['samples_vote'], arrow_schema(Sample))}
        UNION ALL {_parquet_source(con, 'samples_rationale', f['samples_rationale'], arrow_schema(Sample))}""")
    con.execute("CREATE OR REPLACE VIEW scores AS " + " UNION ALL ".join(
        f"SELECT {score_cols}, '{purpose}' AS purpose, ref "
        f"FROM ({_parquet_source(con, f'scores_{purpose}', f[f'scores_{purpose}'], arrow_schema(Score))})"
        for purpose in ("grow", "eval", "vote", "rationale")))
    con.execute(f"CREATE OR REPLACE VIEW kept AS {_parquet_source(con, 'kept', f['kept'], arrow_schema(Kept))}")
    con.execute(f"CREATE OR REPLACE VIEW rejected AS {_parquet_source(con, 'rejected', f['rejected'], arrow_schema(Rejected))}")
    for name, model in (("pass_rates", PassRate), ("budget", Budget)):
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {_parquet_source(con, name, f[name], arrow_schema(model))}")
    con.register("_models", models_table(ws.files["models"]))
    con.execute("CREATE OR REPLACE VIEW models AS SELECT * FROM _models")
    con.register("_metrics", metrics_table(ws.files["metrics"]))
    con.execute("CREATE OR REPLACE VIEW metrics AS SELECT * FROM _metrics")
    # kept and filter_reason: the decision of the sample's own iteration (kept and rejected rows of the same
    # ref as its samples file); a ReST step filters those samples again, and kept_by lists every filter
    # (iteration or step) that kept the sample.
    graded_scores = ", ".join(f"c.{name}" for name in GRADED_SCORE_COLUMNS)
    con.execute(f"""CREATE OR REPLACE VIEW graded AS
        SELECT s.*, {graded_scores},
               CASE WHEN s.purpose IN ('grow', 'rationale') THEN k.sample_id IS NOT NULL END AS kept,
               r.filter_reason,
               CASE WHEN s.purpose IN ('grow', 'rationale') THEN coalesce(b.kept_by, []) END AS kept_by
        FROM samples s
        JOIN scores c ON c.sample_id = s.sample_id AND c.purpose = s.purpose AND c.ref IS NOT DISTINCT FROM s.ref
        LEFT JOIN (SELECT DISTINCT sample_id, ref FROM kept) k
               ON k.sample_id = s.sample_id AND k.ref = s.ref AND s.purpose IN ('grow', 'rationale')
        LEFT JOIN (SELECT sample_id, ref, any_value(filter_reason) AS filter_reason FROM rejected GROUP BY ALL) r
               ON r.sample_id = s.sample_id AND r.ref = s.ref AND s.purpose = 'grow'
        LEFT JOIN (SELECT sample_id, list(DISTINCT ref ORDER BY ref) AS kept_by FROM kept GROUP BY 1) b
               ON b.sample_id = s.sample_id AND s.purpose IN ('grow', 'rationale')""")
    for macro in _MACROS:
        con.execute(macro)
    for name, fn, result in (("text_steps_valid", _text_steps_valid, bool), ("text_step_errors", _text_step_errors, str),
                             ("reasoning_path", _reasoning_path, str)):
        try:
            con.create_function(name, fn, [str], result, type="arrow", null_handling="special", side_effects=False)
        except Exception:  # noqa: BLE001 - a rerun on the same connection: the function is already there
            pass
    from restem.stats import auc_of_lists  # the same function as metrics/reward.json's holdout_auc

    try:
        con.create_function("auc", auc_of_lists, ["DOUBLE[]", "BOOLEAN[]"], "DOUBLE", null_handling="special",
                           side_effects=False)
    except Exception:  # noqa: BLE001 - as above
        pass


def connect(root: Path, threads: Optional[int] = None, memory_limit: Optional[str] = None,
            require_data: bool = True):
    """An in-memory DuckDB connection with the workspace's views; RestemError when there is no data."""
    import duckdb

    ws = discover(root)
    if require_data and not ws.has_data():
        raise RestemError(f"{Path(root).resolve()}: no workspace data (data/, models/, metrics/ are empty); "
                          "run `dvc repro` first, or pass --root / --rev")
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = {_quote(memory_limit)}")
    create_views(con, ws)
    return con


def run_query(con, query: str) -> pa.Table:
    """The result of one SQL query as an Arrow table; DuckDB errors become RestemError with a hint."""
    import duckdb

    if not query or not query.strip():
        raise RestemError('no query given; e.g. restem sql "SELECT iteration, count(*) FROM samples GROUP BY 1"')
    try:
        relation = con.sql(query)
        if relation is None:  # a statement without a result (e.g. CREATE VIEW): nothing to show
            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        raise RestemError(f"query failed: {str(exc).strip()}\nhint: `restem sql --schema` lists the views "
                          "(problems, samples, scores, kept, rejected, pass_rates, budget, models, metrics, graded) and their "
                          "columns; "
                          "quote names with special characters in double quotes") from None


@contextmanager
def open_workspace(root: Path = Path("."), rev: Optional[str] = None, **kwargs) -> Iterator:
    """A DuckDB connection with the views of `root` at `rev` (working tree when rev is None)."""
    if rev:
        with materialise_rev(root, rev) as folder:
            con = connect(folder, **kwargs)
            try:
                yield con
            finally:
                con.close()
    else:
        con = connect(root, **kwargs)
        try:
            yield con
        finally:
            con.close()


# ----------------------------------------------------------------------------------------- command


def sql_command(
    query: Optional[str] = typer.Argument(None, help="SQL over the views; see --schema"),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json"),
    rev: Optional[str] = typer.Option(None, "--rev", help="git revision or DVC experiment to read instead of the working tree"),
    root: Path = typer.Option(Path("."), "--root", help="workspace folder"),
    schema: bool = typer.Option(False, "--schema", help="print the views, their columns and example queries"),
    max_rows: int = typer.Option(200, "--max-rows", help="rows shown by --format table"),
) -> None:
    """Query every iteration's problems, samples, scores, kept/rejected rows, models and metrics with SQL."""
    if schema:
        typer.echo(schema_doc() + "\nexamples\n" + EXAMPLES)
        return
    with user_errors():
        check_format(fmt)
        with open_workspace(root, rev) as con:
            result = run_query(con, query or "")
        render(result, fmt, max_rows)
