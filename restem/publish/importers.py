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
from restem.workspace import INPUTS, log
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
# The fields the code verifiers read from a problem's meta (verifiers/code_exec.py).
VERIFIER_FIELDS = ("test", "entry_point", "input_output", "fn_name")
# Columns that mark each layout, most specific first: the hint of an error on a file read in the wrong format.
_MARKS = (("restem", {"problem_id", "prompt", "reference", "subset", "source"}),
          ("humaneval", {"task_id", "prompt", "test", "entry_point"}), ("apps", {"question", "input_output"}),
          ("gsm8k", {"question", "answer"}), ("math", {"problem", "solution"}))


def guess_format(record: dict) -> Optional[str]:
    """The layout a record's columns look like (restem or a public format), or None."""
    return next((name for name, marks in _MARKS if marks <= set(record)), None)


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


def table_rows(path: Path, split: str) -> list[Problem]:
    """A Problem table as `import_problems` writes it, every column kept (meta, subset, difficulty, source);
    `split` is the role the file plays. Every row is checked; a repeated problem is kept once."""
    from pydantic import ValidationError

    path = Path(path)
    rows, seen = [], set()
    for pos, record in read_records(path):
        try:
            problem = Problem.model_validate({**record, "split": split})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "?"
            guess = guess_format(record)
            hint = (f"; the row looks like a {guess} file: set problems.files.format: {guess}"
                    if guess not in (None, "restem") else "; write it with `restem import problems`")
            raise RestemError(f"{path}: row {pos}: field `{field}`: {err['msg']}{hint}") from None
        if problem.problem_id != Problem.make_id(problem.prompt, problem.reference):
            raise RestemError(f"{path}: row {pos}: field `problem_id` is not the hash of its prompt and reference "
                              "(was the table edited?); import the file again with `restem import problems`")
        try:
            meta = json.loads(problem.meta)
        except json.JSONDecodeError as exc:
            raise RestemError(f"{path}: row {pos}: field `meta` is not valid JSON ({exc.msg})") from None
        if not isinstance(meta, dict):
            raise RestemError(f"{path}: row {pos}: field `meta` must be a JSON object")
        if problem.problem_id not in seen:
            seen.add(problem.problem_id)
            rows.append(problem)
    return rows


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


def _problem_tables(problems: Optional[Path]) -> list[Path]:
    """The Problem tables to check imported samples against: `problems` (a table or a folder of them), else
    those `restem import problems` wrote (inputs/problems), else the problems stage's (data/problems)."""
    if problems is not None:
        found = sorted(Path(problems).glob("*.parquet")) if Path(problems).is_dir() else [Path(problems)]
        if not found:
            raise RestemError(f"--problems {problems}: no Problem table (.parquet) there")
        return found
    for folder in (INPUTS / "problems", Path("data") / "problems"):
        if folder.is_dir() and any(folder.glob("*.parquet")):
            return sorted(folder.glob("*.parquet"))
    return []


def match_problems(path: Path, rows: Sequence[Sample], tables: Sequence[Path]) -> dict:
    """How many of the samples' problems are in `tables`: none is an error (naming the likely cause), some
    missing is a warning with the counts."""
    wanted = {r.problem_id for r in rows}
    known = {rec.get("problem_id") for table in tables for _, rec in read_records(table)}
    matched = len(wanted & known)
    where = ", ".join(str(t) for t in tables)
    if not matched:
        raise RestemError(
            f"{path}: none of the {len(wanted)} problems of these completions is among the {len(known)} problems "
            f"of {where}. A problem id hashes the prompt and the reference, so a different prompt template or "
            "another problems file gives other ids: pass the --template the problems were imported with, map "
            "the question and answer fields (--field), or point --problems at the right table")
    if matched < len(wanted):
        log(f"import samples: WARNING: {len(wanted) - matched} of {len(wanted)} problems of {path} are not in "
            f"{where} ({matched} match); their samples cannot be scored against those problems")
    return {"problems_matched": matched, "problems_unmatched": len(wanted) - matched}


def import_samples(path: Path, output: Path, keys: Optional[Sequence[str]] = None,
                   mapping: Optional[dict[str, str]] = None, template: Optional[str] = None,
                   purpose: str = "grow", problems: Optional[Path] = None) -> dict:
    """Convert external completions and write them as a Sample table (in `Sample.SORT` order), after checking
    their problem ids against the problem tables (`_problem_tables`)."""
    rows = sample_rows(path, keys, mapping, template, purpose)
    if not rows:
        raise RestemError(f"{path}: no completions found; name the fields that hold them with --key")
    tables = _problem_tables(problems)
    if tables:
        matches = match_problems(path, rows, tables)
    else:
        matches = {"problems_matched": None, "problems_unmatched": None}
        log(f"import samples: no problem table found (inputs/problems, data/problems) to check the problem ids "
            "against; pass --problems to check them")
    written = write_rows(Path(output), Sample, rows)
    return {"samples": written, "policies": len({r.policy for r in rows}), "output": str(output), **matches}


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
    problems: Optional[Path] = typer.Option(
        None, "--problems", help="Problem table (or folder of them) the samples answer; default: "
        "inputs/problems, else data/problems. No match is an error, a partial match a warning"),
) -> None:
    """Import external completions as a Sample table."""
    _report(lambda: import_samples(input, output, key or None, parse_mapping(field), template, purpose, problems))
