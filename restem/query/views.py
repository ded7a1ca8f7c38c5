"""The views of `restem sql`: what each one holds, and its columns' documentation (`restem sql --schema`).

A view over a table of `restem.schemas.tables` is documented from that model: field names, Arrow types and
`Field(description=...)`, so adding or describing a field there documents its column here. Written by
hand below is only what the tables do not know: where each view's rows come from, the columns a view
adds (`ref`, `purpose`, `kept_by`, ...), the two views built from JSON (`models`, `metrics`), the
functions, and the joins. `restem.query.sql` builds the views from the same lists (`GRADED_SCORE_COLUMNS`,
`MODELS_SCHEMA`, `METRICS_SCHEMA`).
"""

from __future__ import annotations

import textwrap
import typing
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
from pydantic import BaseModel

from restem.schemas.io import arrow_schema
from restem.schemas.tables import Budget, Kept, ModelMeta, PassRate, Problem, Rejected, Sample, Score

MODELS_SCHEMA = pa.schema([
    ("iteration", pa.int64()), ("model_hash", pa.string()), ("parent", pa.string()), ("checkpoint", pa.string()),
    ("training_data", pa.string()), ("params", pa.string()), ("train_steps", pa.int64()),
    ("final_loss", pa.float64()), ("environment", pa.string()), ("path", pa.string()), ("ref", pa.string()),
    ("stopped_by", pa.string()), ("stop_epoch", pa.int64()),
])
METRICS_SCHEMA = pa.schema([
    ("iteration", pa.int64()), ("model", pa.string()), ("subset", pa.string()), ("metric", pa.string()),
    ("value", pa.float64()), ("ref", pa.string()),
])
# `graded` = a samples row + these columns of its score row (every Score field but the join keys)
GRADED_SCORE_COLUMNS = tuple(n for n in Score.model_fields if n not in ("sample_id", "problem_id", "iteration"))

_SQL_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}
_REF = "the iteration or step the row's folder belongs to (see above)"
_WIDTH = 110


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    description: str


@dataclass(frozen=True)
class View:
    """A view's name, where its rows come from (prose), and its columns in order."""

    name: str
    about: str
    columns: list[Column] = field(default_factory=list)


def _sql_type(arrow_type: pa.DataType, nullable: bool) -> str:
    return _SQL_TYPES.get(arrow_type, str(arrow_type).upper()) + ("?" if nullable else "")


def _values(annotation) -> str:
    """"'a' | 'b': " for a Literal field (also inside Optional), else ""."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return " | ".join(repr(v) for v in typing.get_args(candidate)) + ": "
    return ""


def model_columns(model: type[BaseModel], only: Optional[tuple[str, ...]] = None) -> list[Column]:
    """The documented columns of a table model (all its fields, or `only` these, in field order)."""
    schema = arrow_schema(model)
    columns = []
    for name, info in model.model_fields.items():
        if only is not None and name not in only:
            continue
        f = schema.field(name)
        columns.append(Column(name, _sql_type(f.type, f.nullable), _values(info.annotation) + (info.description or "")))
    return columns


def _schema_columns(schema: pa.Schema, descriptions: dict[str, str]) -> list[Column]:
    missing = [f.name for f in schema if f.name not in descriptions]
    if missing:  # a column added to the schema must be documented here
        raise KeyError(f"undocumented view columns {missing}")
    return [Column(f.name, _sql_type(f.type, True), descriptions[f.name]) for f in schema]


def _ref(nulls: str = "") -> Column:
    return Column("ref", "VARCHAR" + ("?" if nulls else ""), _REF + (f"; NULL for {nulls}" if nulls else ""))


_META = {name: info.description or "" for name, info in ModelMeta.model_fields.items()}

VIEWS: list[View] = [
    View("problems", "data/problems/*.parquet (demos, train, test): one row per task instance, not per iteration",
         model_columns(Problem)),
    View("samples", "data/iter<ref>/samples.parquet (purpose 'grow'), data/eval/iter<ref>/samples.parquet ('eval') and "
         "data/voters/samples.parquet ('vote': each voter's greedy answer, iteration 0, policy = the voter's model "
         "hash; with filter.voters.improve also data/iter<ref>/votes.parquet, the co-improving voters' answers to "
         "that iteration's problems) and data/iter<ref>/rationales.parquet ('rationale': hinted samples of problems Grow did not solve, "
         "prompt = the hinted prompt; kept ones are kept rows with the unhinted prompt and a rule starting "
         "'rationalized;'); the reward model's training samples (data/reward) are not in it",
         model_columns(Sample) + [_ref("the rows of data/voters")]),
    View("scores", "one row per sample and verifier, from the scores.parquet beside each samples file",
         model_columns(Score) + [
             Column("purpose", "VARCHAR", "'grow' | 'eval' | 'vote' | 'rationale': which samples file the row "
                    "scores"),
             _ref("the rows of data/voters")]),
    View("kept", "data/iter<ref>/kept.parquet: the filter's training set (a step '1b' filters iteration 1's "
         "samples again: iteration 1, ref '1b')", model_columns(Kept) + [_ref()]),
    View("rejected", "data/iter<ref>/rejected.parquet: what the filter dropped, and why",
         model_columns(Rejected) + [_ref()]),
    View("pass_rates", "data/iter<ref>/pass_rates.parquet (written by score): per problem, how often the iteration's "
         "samples solve it, and their majority answer", model_columns(PassRate) + [_ref()]),
    View("budget", "data/iter<ref>/budget.parquet (written by grow): per problem, the samples grow.budget drew and "
         "why it stopped", model_columns(Budget) + [_ref()]),
    View("models", "models/iter<ref>/restem.json, one row per model", _schema_columns(MODELS_SCHEMA, {
        "iteration": "iteration number (a step's model: its iteration's)",
        "model_hash": _META["model_hash"], "parent": _META["parent"], "checkpoint": _META["checkpoint"],
        "training_data": _META["training_data"], "params": _META["params"] + " (JSON)",
        "train_steps": "optimizer steps of its training (NULL: not trained here)",
        "final_loss": "the last logged training loss", "environment": _META["environment"] + " (JSON; {} before it "
        "was recorded)", "path": "the restem.json file", "ref": _REF,
        "stopped_by": "what ended its training before the cap of epochs or steps ('loss_target': the first epoch "
        "whose mean loss fell below train.loss_target); NULL: it ran to the cap",
        "stop_epoch": "the epoch its training stopped after (with stopped_by); NULL otherwise"})),
    View("metrics", "metrics/iterations/iter<ref>.json, one row per number", _schema_columns(METRICS_SCHEMA, {
        "iteration": "iteration number of the model evaluated", "model": "its model_hash",
        "subset": "test set (e.g. 'in_dist'); NULL for the file's top-level numbers",
        "metric": "e.g. 'pass@1', 'pass@8', 'maj@8'", "value": "the number", "ref": _REF})),
    View("graded", "samples joined with their scores (one row per sample and verifier), and the filter's decision",
         [Column(", ".join(Sample.model_fields) + ", ref", "", "every samples column")]
         + model_columns(Score, GRADED_SCORE_COLUMNS) + [
             Column("kept", "BOOLEAN?", "grow and rationale rows: kept by its own iteration's filter (NULL for eval "
                    "and vote)"),
             Column("filter_reason", "VARCHAR?", "why its own iteration's filter dropped it (NULL when kept, eval, "
                    "vote)"),
             Column("kept_by", "VARCHAR[]?", "grow and rationale rows: the refs whose filter kept it, e.g. "
                    "['1', '1b']")]),
]

PREAMBLE = """\
Every view but problems ends with `ref`: the iteration or ReST step whose folder the row comes from, as
params and the CLI write it ('0', '1', '1b'). A step ('1b') filters its iteration's samples again: its
kept/rejected rows carry iteration 1 and ref '1b'; its model, metrics and eval rows carry iteration 1 and
ref '1b'. ORDER BY iteration, ref is run order. A type ending in '?' may be NULL.
"""

FUNCTIONS = """\
functions
  reasoning_path(completion)  the solution's equations joined by ' | ' (calculator annotations <<...>> if
                              any; the text when it has none): the filter's `dedup: equations` key
                              (verifiers/paths.py; Python per row)
  is_reward_model(verifier)   true for score rows written by a reward model (verifier starts with 'rm:')
  text_steps_valid(completion) recheck a solution's arithmetic (verifiers/steps.py; slow: Python per row)
  text_step_errors(completion) the wrong steps it finds, as text (NULL when none)
  auc(scores, labels)         area under the ROC curve of DOUBLE[] scores against BOOLEAN[] labels, ties
                              counting half (restem/stats.py, as metrics/reward.json); build both lists with
                              the same ORDER BY: auc(list(s ORDER BY s, y), list(y ORDER BY s, y))
joins: samples.sample_id = scores.sample_id = kept.sample_id = rejected.sample_id;
       problem_id to problems, and (with ref) to pass_rates and budget; ref to models.ref and metrics.ref (kept.ref: the model trained on it)
"""


def _view_text(view: View) -> str:
    width = max(len(c.name) for c in view.columns if c.sql_type)
    lines = textwrap.wrap(f"{view.name}: {view.about}", _WIDTH, subsequent_indent=" " * (len(view.name) + 2))
    for c in view.columns:
        if c.sql_type:
            head = f"  {c.name:<{width}}  {c.sql_type:<10} "
            lines += textwrap.wrap(head + c.description, _WIDTH, subsequent_indent=" " * len(head),
                                   break_on_hyphens=False) or [head.rstrip()]
        else:  # a list of names standing for another view's columns
            lines += textwrap.wrap(f"{c.description}: {c.name}", _WIDTH, initial_indent="  ",
                                   subsequent_indent="    ")
    return "\n".join(lines) + "\n"


def schema_doc() -> str:
    """What `restem sql --schema` prints before the examples."""
    return PREAMBLE + "".join(_view_text(v) for v in VIEWS) + FUNCTIONS
