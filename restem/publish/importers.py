"""`restem import`: turn public problem files and external completions into the loop's tables.

Problems: GSM8K (question, answer ending `#### 18`), MATH (problem, solution with `\\boxed{}`, level,
type), HumanEval (task_id, prompt, canonical_solution, test, entry_point) and APPS (question,
solutions, input_output, difficulty, starter_code), from JSONL, JSONL.gz or Parquet, become
`restem.schemas.tables.Problem` rows, by default in `inputs/problems/` (the folder stage `problems` depends on, so
DVC sees a re-import). Another layout works through a field mapping (our name -> the file's
name, e.g. `{"question": "input"}`). An optional prompt template (a format string with `{prompt}`)
wraps every prompt, e.g. for chat models; the problem id hashes the final prompt and reference.

Samples: a file of external completions (e.g. GSM8K's example_model_solutions.jsonl, where each model
is a key holding {"solution", "is_correct"}) becomes one `Sample` row per (problem, model), engine
`external:<key>`, policy = hash of the key, iteration 0. Token counts are unknown for external text
and recorded as 0.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import typer

from restem.cli.errors import user_errors
from restem.prompting import apply_template
from restem.schemas.errors import RestemError
from restem.schemas.hashing import canonical_json, content_hash
from restem.schemas.io import read_records, write_rows
from restem.schemas.tables import Problem, Sample
from restem.workspace import INPUTS
from restem.verifiers.math_extract import last_boxed, reference_answer

FORMATS = ("gsm8k", "math", "humaneval", "apps")
APPS_DIFFICULTY = {"introductory": 1, "interview": 2, "competition": 3}
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


# ----------------------------------------------------------------------------------------------- reading


class _Row:
    """One input record seen through the field mapping; a missing field names file, line and mapping."""

    def __init__(self, path: Path, pos: int, record: dict, mapping: dict[str, str]):
        self.path, self.pos, self.record, self.mapping = path, pos, record, mapping

    def get(self, name: str, required: bool = True) -> Any:
        key = self.mapping.get(name, name)
        value = self.record.get(key)
        if value is None and required:
            hint = f" (mapped from `{name}`)" if key != name else ""
            raise RestemError(f"{self.path}: line {self.pos}: field `{key}`{hint} is missing; "
                              f"map it with --field {name}=<your field name>")
        return value

    def error(self, message: str) -> RestemError:
        return RestemError(f"{self.path}: line {self.pos}: {message}")


# ------------------------------------------------------------------------------------------- converters


def _number_text(text: str) -> str:
    text = text.strip()
    return text.replace(",", "") if _THOUSANDS.match(text) else text


def _gsm8k(row: _Row) -> dict:
    answer = str(row.get("answer"))
    if "####" not in answer:
        raise row.error("field `answer` has no `#### <final answer>` line; GSM8K answers end with one")
    return {"prompt": str(row.get("question")), "reference": _number_text(answer.rsplit("####", 1)[1]),
            "solution": answer, "meta": {}}


def _level(value: Any) -> Optional[int]:
    found = re.search(r"\d+", str(value)) if value is not None else None
    return int(found.group(0)) if found else None


def _math(row: _Row) -> dict:
    solution = str(row.get("solution"))
    boxed = last_boxed(solution)
    if boxed is None:
        raise row.error("field `solution` has no \\boxed{...} answer; MATH solutions box their final answer")
    meta = {"type": row.get("type", required=False)} if row.get("type", required=False) else {}
    return {"prompt": str(row.get("problem")), "reference": boxed, "solution": solution,
            "difficulty": _level(row.get("level", required=False)), "meta": meta}


def _humaneval(row: _Row) -> dict:
    meta = {"test": str(row.get("test")), "entry_point": str(row.get("entry_point"))}
    task = row.get("task_id", required=False)
    if task:
        meta["task_id"] = str(task)
    return {"prompt": str(row.get("prompt")), "reference": "", "solution": row.get("canonical_solution", required=False),
            "meta": meta}


def _json_field(row: _Row, name: str, required: bool) -> Any:
    value = row.get(name, required=required)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise row.error(f"field `{name}` is not valid JSON ({exc.msg})") from None
    return value


def _apps(row: _Row) -> dict:
    spec = _json_field(row, "input_output", required=True)
    if not isinstance(spec, dict) or not spec.get("inputs") or len(spec.get("inputs", [])) != len(spec.get("outputs", [])):
        raise row.error("field `input_output` needs non-empty `inputs` and `outputs` of equal length")
    solutions = _json_field(row, "solutions", required=False) or []
    starter = row.get("starter_code", required=False) or ""
    prompt = str(row.get("question")) + (f"\n\n{starter}" if starter else "")
    meta = {"input_output": spec, "fn_name": spec.get("fn_name")}
    if starter:
        meta["starter_code"] = starter
    difficulty = row.get("difficulty", required=False)
    return {"prompt": prompt, "reference": "", "solution": solutions[0] if solutions else None,
            "difficulty": APPS_DIFFICULTY.get(str(difficulty)) if difficulty is not None else None, "meta": meta}


CONVERTERS: dict[str, Callable[[_Row], dict]] = {"gsm8k": _gsm8k, "math": _math, "humaneval": _humaneval, "apps": _apps}


def problem_rows(path: Path, fmt: str, split: str, subset: str, mapping: Optional[dict[str, str]] = None,
                 template: Optional[str] = None) -> tuple[list[Problem], int]:
    """(Problem rows, duplicates dropped) for one file in format `fmt` (gsm8k, math, humaneval, apps)."""
    if fmt not in CONVERTERS:
        raise RestemError(f"unknown problem format {fmt!r}; choose one of {list(FORMATS)}")
    if split not in ("demo", "train", "test"):
        raise RestemError(f"--split {split!r}: choose demo, train or test")
    apply_template(template, "", "--template")  # a broken template fails before any row is read
    path = Path(path)
    rows, seen, duplicates = [], set(), 0
    for pos, record in read_records(path):
        fields = CONVERTERS[fmt](_Row(path, pos, record, mapping or {}))
        prompt = apply_template(template, fields["prompt"], "--template")
        problem_id = Problem.make_id(prompt, fields["reference"])
        if problem_id in seen:  # the same problem twice would double its weight in every iteration
            duplicates += 1
            continue
        seen.add(problem_id)
        try:
            rows.append(Problem(problem_id=problem_id, split=split, subset=subset, prompt=prompt,
                                reference=fields["reference"], solution=fields.get("solution"),
                                difficulty=fields.get("difficulty"), source=path.name,
                                meta=canonical_json(fields.get("meta") or {})))
        except ValueError as exc:
            raise RestemError(f"{path}: line {pos}: cannot make a Problem row ({exc})") from None
    return rows, duplicates


def import_problems(path: Path, fmt: str, output: Path, split: str = "train", subset: str = "default",
                    mapping: Optional[dict[str, str]] = None, template: Optional[str] = None) -> dict:
    """Convert a problem file and write it as a Problem table (Parquet, in `Problem.SORT` order)."""
    rows, duplicates = problem_rows(path, fmt, split, subset, mapping, template)
    if not rows:
        raise RestemError(f"{path}: no problems found; is it the right file and --format?")
    written = write_rows(Path(output), Problem, rows)
    return {"problems": written, "duplicates_dropped": duplicates, "output": str(output)}


# --------------------------------------------------------------------------------------------- samples


def _completion_keys(record: dict) -> list[str]:
    """Keys whose value is a {"solution": ...} object (the example_model_solutions layout)."""
    return sorted(k for k, v in record.items() if isinstance(v, dict) and "solution" in v)


def policy_hash(key: str) -> str:
    """The policy id of an external model, named by its key in the file."""
    return content_hash("external-policy", key)


def sample_rows(path: Path, keys: Optional[Sequence[str]] = None, mapping: Optional[dict[str, str]] = None,
                template: Optional[str] = None, purpose: str = "grow", temperature: float = 0.0) -> list[Sample]:
    """One Sample per (record, completion key). Records carry `question` and `ground_truth` (mappable).

    `keys`: the fields holding completions, each a string or {"solution": ...}; default: every field
    whose value is an object with a `solution`.
    """
    if purpose not in ("grow", "eval"):
        raise RestemError(f"--purpose {purpose!r}: choose grow or eval")
    apply_template(template, "", "--template")
    path = Path(path)
    rows = []
    for pos, record in read_records(path):
        row = _Row(path, pos, record, mapping or {})
        prompt = apply_template(template, str(row.get("question")), "--template")
        reference = _number_text(reference_answer(str(row.get("ground_truth"))))
        problem_id = Problem.make_id(prompt, reference)
        for key in keys or _completion_keys(record):
            value = record.get(key)
            completion = value.get("solution") if isinstance(value, dict) else value
            if not isinstance(completion, str):
                raise row.error(f"field `{key}` holds no completion text; give --key names of text fields "
                                "or of objects with a `solution`")
            engine, policy = f"external:{key}", policy_hash(key)
            rows.append(Sample(
                sample_id=content_hash("sample", problem_id, policy, engine, 0, 0), problem_id=problem_id,
                iteration=0, purpose=purpose, policy=policy, engine=engine, sample_index=0, seed=0,
                temperature=temperature, prompt=prompt, completion=completion, finish_reason="eos",
                prompt_tokens=0, completion_tokens=0))
    return rows


def import_samples(path: Path, output: Path, keys: Optional[Sequence[str]] = None,
                   mapping: Optional[dict[str, str]] = None, template: Optional[str] = None,
                   purpose: str = "grow") -> dict:
    """Convert external completions and write them as a Sample table (in `Sample.SORT` order)."""
    rows = sample_rows(path, keys, mapping, template, purpose)
    if not rows:
        raise RestemError(f"{path}: no completions found; name the fields that hold them with --key")
    written = write_rows(Path(output), Sample, rows)
    return {"samples": written, "policies": len({r.policy for r in rows}), "output": str(output)}


# ------------------------------------------------------------------------------------------ commands


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`ours=theirs` strings into a mapping; anything else is an error naming the option."""
    mapping = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise RestemError(f"--field {pair!r}: write it as our_name=your_name, e.g. --field question=input")
        mapping[ours.strip()] = theirs.strip()
    return mapping


def _report(fn: Callable[[], dict]) -> None:
    with user_errors():
        stats = fn()
    typer.echo(json.dumps(stats, sort_keys=True))


def import_problems_command(
    input: Path = typer.Option(..., "--input", "-i", help="problem file: JSONL, JSONL.gz or Parquet"),
    fmt: str = typer.Option(..., "--format", help="gsm8k, math, humaneval or apps"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Problem table to write (Parquet); default inputs/problems/<split>.parquet, "
        "where stage `problems` tracks it by content (params problems.files.<split> points at it)"),
    split: str = typer.Option("train", "--split", help="demo, train or test"),
    subset: str = typer.Option("default", "--subset", help="name of the set within the split"),
    field: list[str] = typer.Option([], "--field", help="our_name=your_name, for files with other field names"),
    template: Optional[str] = typer.Option(None, "--template", help="a Python format string with {prompt}, baked into every stored prompt; for a chat model leave it out and set prompt.style: chat in params.yaml (the tokenizer's chat template is applied when sampling)"),
) -> None:
    """Import a problem file as a Problem table."""
    output = output or INPUTS / "problems" / f"{split}.parquet"
    _report(lambda: import_problems(input, fmt, output, split, subset, parse_mapping(field), template))


def import_samples_command(
    input: Path = typer.Option(..., "--input", "-i", help="completions file: JSONL, JSONL.gz or Parquet"),
    output: Path = typer.Option(..., "--output", "-o", help="Sample table to write (Parquet)"),
    key: list[str] = typer.Option([], "--key", help="field holding completions (repeat); default: every {solution} object"),
    field: list[str] = typer.Option([], "--field", help="our_name=your_name (question, ground_truth)"),
    template: Optional[str] = typer.Option(None, "--template", help="the prompt template used for the problems"),
    purpose: str = typer.Option("grow", "--purpose", help="grow or eval"),
) -> None:
    """Import external completions as a Sample table."""
    _report(lambda: import_samples(input, output, key or None, parse_mapping(field), template, purpose))
