"""`restem verify VERIFIER --input FILE --output FILE`: grade a file of completions with one verifier.

Input: JSONL (optionally .gz) or Parquet, one completion per row. Fields by verifier:
  math, gsm8k (and other answer verifiers): id, completion, reference (optional prompt);
             `--extraction strict|lenient` chooses how math and gsm8k find the final answer
  humaneval: id, prompt, completion, test, entry_point
  apps:      id, completion, input_output (JSON text or object), optional fn_name
Output: Parquet with id, verifier, verdict, correct, reward, extracted, steps_valid, details (JSON
text), sorted by id, written atomically, identical bytes for identical input. A malformed input is a
`RestemError` naming the file, the line (row) and the fix, and no output is written.

Answer verifiers run in `restem.verifiers.pool` (hard per-sample timeout, `error` on timeout or crash); code
verifiers run in `restem.verifiers.code_exec` sandboxes (per-program time limit = `timeout_s`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path


import pyarrow as pa
import typer

from restem.cli.errors import user_errors
from restem.schemas.errors import RestemError
from restem.schemas.io import read_records as io_read_records, record_unit, write_table
from restem.workspace import log
from restem.verifiers.base import Verdict, get_verifier, unknown_verifier, verifier_names
from restem.verifiers.batch import grade_batch
from restem.verifiers.math_extract import DEFAULT_EXTRACTION, EXTRACTING_VERIFIERS, EXTRACTION_MODES, verifier_options

REQUIRED = {
    "humaneval": ("id", "prompt", "completion", "test", "entry_point"),
    "apps": ("id", "completion", "input_output"),
}
ANSWER_FIELDS = ("id", "completion", "reference")
OUTPUT_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("verifier", pa.string(), nullable=False),
    pa.field("verdict", pa.string(), nullable=False),
    pa.field("correct", pa.bool_(), nullable=True),
    pa.field("reward", pa.float64(), nullable=False),
    pa.field("extracted", pa.string(), nullable=True),
    pa.field("steps_valid", pa.bool_(), nullable=True),
    pa.field("details", pa.string(), nullable=False),
])


# ----------------------------------------------------------------------------------------------- input


def read_records(path: Path) -> tuple[list[tuple[int, dict]], str]:
    """(line or row number, record) pairs from a JSONL(.gz) or Parquet file, and the word for a position."""
    return io_read_records(path), record_unit(path)


def _required(verifier: str) -> tuple[str, ...]:
    return REQUIRED.get(verifier, ANSWER_FIELDS)


def _check_record(path: Path, unit: str, pos: int, record: dict, verifier: str) -> None:
    """Raise a RestemError naming the file, position and field when `record` cannot be graded."""
    needed = _required(verifier)
    for name in needed:
        if name not in record or record[name] is None:
            raise RestemError(f"{path}: {unit} {pos}: field `{name}` is missing; verifier {verifier!r} needs "
                              f"fields {list(needed)} on every {unit}")
        if name == "input_output" and isinstance(record[name], dict):
            continue
        if not isinstance(record[name], str):
            raise RestemError(f"{path}: {unit} {pos}: field `{name}` is a {type(record[name]).__name__}, "
                              "expected text; quote it as a JSON string")
    if verifier == "apps" and isinstance(record["input_output"], str):
        try:
            spec = json.loads(record["input_output"])
        except json.JSONDecodeError as exc:
            raise RestemError(f"{path}: {unit} {pos}: field `input_output` is not valid JSON ({exc.msg}); "
                              'it must encode {"inputs": [...], "outputs": [...]}') from None
        if not isinstance(spec, dict) or "inputs" not in spec or "outputs" not in spec:
            raise RestemError(f"{path}: {unit} {pos}: field `input_output` needs keys `inputs` and `outputs`")


def load_items(path: Path, verifier: str) -> list[tuple[str, str, dict]]:
    """(id, completion, problem mapping) for every record, validated; ids must be unique."""
    records, unit = read_records(path)
    seen: dict[str, int] = {}
    items = []
    for pos, record in records:
        _check_record(path, unit, pos, record, verifier)
        rid = record["id"]
        if rid in seen:
            raise RestemError(f"{path}: {unit} {pos}: id {rid!r} already used on {unit} {seen[rid]}; ids must be unique")
        seen[rid] = pos
        items.append((rid, record["completion"], _problem(record, verifier)))
    return items


def _problem(record: dict, verifier: str) -> dict:
    """The problem mapping a verifier reads (prompt, reference, meta) built from one input record."""
    if verifier == "humaneval":
        meta = {"test": record["test"], "entry_point": record["entry_point"]}
        return {"prompt": record["prompt"], "reference": "", "meta": meta}
    if verifier == "apps":
        meta = {"input_output": record["input_output"], "fn_name": record.get("fn_name")}
        return {"prompt": record.get("prompt", ""), "reference": "", "meta": meta}
    return {"prompt": record.get("prompt", ""), "reference": record["reference"], "meta": {}}


# ---------------------------------------------------------------------------------------------- grading


def _grade(verifier: str, items: list[tuple[str, str, dict]], workers: int, timeout_s: float,
           options: dict) -> tuple[list[Verdict], dict]:
    return grade_batch(verifier, [(completion, problem) for _, completion, problem in items], workers, timeout_s,
                       options)


def _table(items: list[tuple[str, str, dict]], verdicts: list[Verdict], label: str) -> pa.Table:
    rows = sorted(
        ({"id": rid, "verifier": label, "verdict": v.verdict, "correct": v.correct, "reward": float(v.reward),
          "extracted": v.extracted, "steps_valid": v.steps_valid, "details": v.details_json()}
         for (rid, _, _), v in zip(items, verdicts)),
        key=lambda r: r["id"],
    )
    return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)


def _options(verifier: str, extraction: str | None) -> dict:
    """The verifier's options: `--extraction` for math and gsm8k (default: the score stage's default)."""
    if extraction is not None and extraction not in EXTRACTION_MODES:
        raise RestemError(f"--extraction must be one of {list(EXTRACTION_MODES)}, got {extraction!r}")
    if extraction is not None and verifier not in EXTRACTING_VERIFIERS:
        raise RestemError(f"--extraction applies to {sorted(EXTRACTING_VERIFIERS)} only, not {verifier!r}; drop it")
    return verifier_options(verifier, extraction or DEFAULT_EXTRACTION)


def run(verifier: str, input_path: Path, output_path: Path, workers: int = 0, timeout_s: float = 10.0,
        extraction: str | None = None) -> dict:
    """Grade every completion in `input_path` and write the verdicts to `output_path` (Parquet).

    workers: processes (answer verifiers) or sandboxes (code verifiers); 0 = one per CPU.
    extraction: strict | lenient for math and gsm8k (None: the default, as `score.extraction`).
    Returns stats: rows, counts per verdict, timeouts, errors, seconds (and pool restarts/crashes).
    """
    if verifier not in verifier_names():
        raise RestemError(unknown_verifier(verifier))
    if timeout_s <= 0:
        raise RestemError(f"--timeout must be positive, got {timeout_s}")
    options = _options(verifier, extraction)
    started = time.monotonic()
    items = load_items(Path(input_path), verifier)
    from restem.verifiers.pool import default_workers

    workers = workers if workers > 0 else default_workers()
    instance = get_verifier(verifier, **options)
    verdicts, grading = _grade(verifier, items, workers, timeout_s, options)
    write_table(Path(output_path), _table(items, verdicts, f"{instance.name} {instance.version}"))
    counts = Counter(v.verdict for v in verdicts)
    stats = {"rows": len(items), **{k: counts.get(k, 0) for k in ("correct", "incorrect", "unverifiable", "error")},
             "errors": counts.get("error", 0), **grading, "workers": workers,
             "seconds": round(time.monotonic() - started, 3)}
    log(f"verify: {verifier} graded {stats['rows']} rows: {stats['correct']} correct, {stats['incorrect']} incorrect, "
        f"{stats['unverifiable']} unverifiable, {stats['errors']} errors ({stats['timeouts']} timeouts)")
    return stats


def verify_command(
    verifier: str = typer.Argument(..., help="verifier name: math, gsm8k, humaneval, apps (or another registered one)"),
    input: Path = typer.Option(..., "--input", "-i", help="completions: JSONL, JSONL.gz or Parquet"),
    output: Path = typer.Option(..., "--output", "-o", help="verdicts: Parquet, written atomically"),
    workers: int = typer.Option(0, "--workers", help="parallel workers or sandboxes; 0 = one per CPU"),
    timeout: float = typer.Option(10.0, "--timeout", help="hard time limit per sample (code: per program run), seconds"),
    extraction: str = typer.Option(None, "--extraction", help=f"math, gsm8k: strict (a committed final answer is "
                                   f"required) or lenient (else the last expression); default {DEFAULT_EXTRACTION}"),
) -> None:
    """Grade completions with one verifier and write one verdict per row."""
    with user_errors():
        stats = run(verifier, input, output, workers, timeout, extraction)
    typer.echo(json.dumps(stats, sort_keys=True))
