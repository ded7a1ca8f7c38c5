"""Stage `problems`: the problem set, as `data/problems/{demos,train,test}.parquet`.

Either generates the embedded addition task from a seed (demonstrations for the base model, a
Grow pool, and named test sets at fixed digit counts, disjoint from each other), or reads a user's
own JSONL/Parquet files (params: problems.files), which must lie in `inputs/problems/` (a dep of this stage,
so DVC sees a replaced file). `problems.files.format` says how a file is read: `columns` (named columns),
`restem` (a table from `restem import problems`: meta, subset and difficulty kept; the split is the file's role)
or a public format (gsm8k, math, humaneval, apps) read by the same rule as `restem import problems`
(restem/publish/importers.py), so a code problem keeps the tests its verifier runs. Every row is checked;
a bad row names the file, the row and the field.
With params problems.decontaminate (mode report or drop), the Grow pool and demonstrations are checked for word
n-gram overlap with the test split and the benchmark files in inputs/decontam/ (restem/decontam.py): the record
goes to data/problems/decontam.json, and mode drop removes the contaminated problems.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

from restem.publish.importers import VERIFIER_FIELDS, guess_format, problem_rows, table_rows
from restem.schemas.errors import RestemError
from restem.schemas.hashing import canonical_json
from restem.schemas.io import atomic_dir, read_records, write_json, write_rows
from restem.decontam import decontaminate_problems
from restem.schemas.params import ArithmeticTask, Params, ProblemFiles
from restem.schemas.tables import Problem
from restem.workspace import DECONTAM_FILE, log, problems_dir, user_input
from restem.verifiers.arithmetic import make_prompt, random_operand, scratchpad
from restem.verifiers.reversed_addition import make_prompt as reversed_prompt, make_solution as reversed_solution

SPLITS = ("demos", "train", "test")


def _addition(a: int, b: int, split: str, subset: str, source: str) -> Problem:
    prompt, reference = make_prompt(a, b), str(a + b)
    return Problem(
        problem_id=Problem.make_id(prompt, reference), split=split, subset=subset, prompt=prompt,
        reference=reference, solution=scratchpad(a, b), difficulty=max(len(str(a)), len(str(b))), source=source,
    )


def _reversed_addition(a: int, b: int, offset: int, split: str, subset: str, source: str) -> Problem:
    prompt, reference = reversed_prompt(a, b, offset), str(a + b)
    return Problem(
        problem_id=Problem.make_id(prompt, reference), split=split, subset=subset, prompt=prompt,
        reference=reference, solution=reversed_solution(a, b, offset), difficulty=max(len(str(a)), len(str(b))),
        source=source,
    )


def _draw(rng: random.Random, count: int, digits: Iterator[tuple[int, int]], taken: set[str], split: str,
          subset: str, fmt: str = "scratchpad") -> list[Problem]:
    out: list[Problem] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RestemError(
                f"problems.arithmetic: cannot draw {count} distinct {split}/{subset} problems "
                "with these digit counts; lower the count or widen the digits"
            )
        da, db = next(digits)
        if fmt == "reversed":
            # Operands first, then the tag offset, so the operand stream matches the scratchpad format.
            a, b = random_operand(rng, da), random_operand(rng, db)
            p = _reversed_addition(a, b, rng.randrange(26), split, subset, "reversed_addition")
        else:
            p = _addition(random_operand(rng, da), random_operand(rng, db), split, subset, "arithmetic")
        if p.problem_id not in taken:
            taken.add(p.problem_id)
            out.append(p)
    return out


def generate_arithmetic(task: ArithmeticTask, seed: int) -> dict[str, list[Problem]]:
    """Test sets first, then the Grow pool, then demonstrations, each disjoint from the earlier ones."""
    rng = random.Random(seed)
    taken: set[str] = set()

    def fixed(d: int):
        while True:
            yield d, d

    def ranged(low: int, high: int):
        # Both operands have the same digit count, drawn uniformly, so each length is equally taught.
        while True:
            d = rng.randint(low, high)
            yield d, d

    fmt = task.format
    test = []
    for name, digits in sorted(task.test_sets.items()):
        test += _draw(rng, task.test_count, fixed(digits), taken, "test", name, fmt)
    train = _draw(rng, task.train_count, ranged(task.train_digits.low, task.train_digits.high), taken, "train", "pool",
                  fmt)
    demos = _draw(rng, task.demo_count, ranged(task.demo_digits.low, task.demo_digits.high), taken, "demo", "demos",
                  fmt)
    if task.extra_demo_count and task.extra_demo_digits:
        demos += _draw(rng, task.extra_demo_count, fixed(task.extra_demo_digits), taken, "demo", "extra", fmt)
    return {"demos": demos, "train": train, "test": test}


def _read_records(path: Path) -> list[dict]:
    """Rows of a JSONL or Parquet problem file; a malformed line is an error naming it."""
    if not path.exists():
        raise RestemError(f"{path}: problem file not found (params: problems.files)")
    return [record for _, record in read_records(path)]


def read_problem_file(path: Path, files: ProblemFiles, split: str, need_solution: bool = False) -> list[Problem]:
    """Problems from a user's file in `files.format`, every row checked."""
    if files.format == "columns":
        out = _read_columns(path, files, split, need_solution)
    else:
        if not path.exists():
            raise RestemError(f"{path}: problem file not found (params: problems.files)")
        # One reader per format, shared with `restem import problems` (restem/publish/importers.py).
        if files.format == "restem":
            out = table_rows(path, split)
        else:
            out, _ = problem_rows(path, files.format, split, subset=split)
        if need_solution:
            for problem in out:
                if problem.solution is None:
                    raise RestemError(f"{path}: problem {problem.prompt[:40]!r} has no solution; a demonstration "
                                      "needs one (params: problems.files.demos)")
    if not out:
        raise RestemError(f"{path}: no rows")
    return out


def _read_columns(path: Path, files: ProblemFiles, split: str, need_solution: bool) -> list[Problem]:
    """format `columns`: the *_field columns, and the code verifiers' fields (VERIFIER_FIELDS) kept in meta."""
    records = _read_records(path)
    out, seen = [], set()
    for n, rec in enumerate(records, start=1):
        where = f"{path}, row {n}"
        prompt = rec.get(files.prompt_field)
        if not isinstance(prompt, str) or not prompt:
            guess = guess_format(rec)
            hint = f"; the row looks like a {guess} file: set problems.files.format: {guess}" if guess else ""
            raise RestemError(f"{where}: field `{files.prompt_field}` must be a non-empty string "
                              f"(params: problems.files.prompt_field){hint}")
        reference = rec.get(files.reference_field)
        if reference is None or isinstance(reference, (dict, list)):
            raise RestemError(f"{where}: field `{files.reference_field}` (the gold answer) is missing "
                              f"(params: problems.files.reference_field)")
        solution = rec.get(files.solution_field)
        if need_solution and not isinstance(solution, str):
            raise RestemError(f"{where}: a demonstration needs a `{files.solution_field}` string")
        difficulty = rec.get(files.difficulty_field) if files.difficulty_field else None
        if difficulty is not None and not isinstance(difficulty, int):
            raise RestemError(f"{where}: field `{files.difficulty_field}` must be an integer")
        subset = str(rec.get(files.subset_field, split)) if files.subset_field else split
        meta = {k: rec[k] for k in VERIFIER_FIELDS if rec.get(k) is not None}
        problem = Problem(
            problem_id=Problem.make_id(prompt, str(reference)), split=split, subset=subset, prompt=prompt,
            reference=str(reference), solution=solution if isinstance(solution, str) else None,
            difficulty=difficulty, source=path.name, meta=canonical_json(meta),
        )
        if problem.problem_id in seen:
            continue  # an exact repeat of (prompt, reference) is the same problem
        seen.add(problem.problem_id)
        out.append(problem)
    return out


def run(params: Params, root: Path = Path(".")) -> dict[str, int]:
    """Write the three problem tables; returns row counts per split."""
    spec = params.problems
    if spec.source == "arithmetic":
        tables = generate_arithmetic(spec.arithmetic, spec.seed)
    else:
        files = spec.files
        paths = {split: user_input(getattr(files, split), "problems", f"problems.files.{split}", root)
                 for split in SPLITS if getattr(files, split)}
        tables = {
            "train": read_problem_file(paths["train"], files, "train"),
            "test": read_problem_file(paths["test"], files, "test"),
            "demos": read_problem_file(paths["demos"], files, "demo", need_solution=True) if files.demos else [],
        }
        if not tables["demos"] and params.base.checkpoint is None:
            raise RestemError("params: training a base model needs demonstrations; set problems.files.demos "
                              "or point base.checkpoint at a local Hugging Face checkpoint")
    tables, record = decontaminate_problems(tables, spec.decontaminate, root)
    out = problems_dir(root)
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            write_rows(tmp / f"{split}.parquet", Problem, tables[split])
        if record is not None:  # mode none writes nothing, so the default outputs are as without the check
            write_json(tmp / DECONTAM_FILE, record)
    counts = {split: len(rows) for split, rows in tables.items()}
    log(f"problems: {counts} -> {out}")
    return counts


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("problems")
