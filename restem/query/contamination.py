"""`restem audit contamination`: the training side of a workspace (or a file) against its test sets (or a file),
by the n-gram rule of restem/decontam.py. Not SQL: the texts come from `restem sql`'s views, the overlap is
computed in Python."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import typer

from restem.decontam import DEFAULT_N, Item, against_items, build_index, file_items, overlaps, problem_items, summarise
from restem.query.sql import open_workspace, run_query
from restem.schemas.errors import RestemError


def workspace_items(con, root: Path, against: bool = True, solutions: bool = False) -> tuple[list[Item], list[Item]]:
    """(training items, test items) of a workspace, through `restem sql`'s views on `con`: the Grow pool and
    demonstrations (prompts; with `solutions` their gold solutions too) and every kept sample (prompt, completion;
    set 'kept@<ref>') against the test problems (per subset) and, with `against`, the files of
    `root/params.yaml`'s problems.decontaminate."""
    problems = run_query(con, "SELECT problem_id, split, subset, prompt, solution FROM problems "
                              "ORDER BY split, subset, problem_id").to_pylist()
    if not problems:
        raise RestemError(f"{root}: no data/problems tables; run `dvc repro problems` (or `dvc pull`) first, "
                          "or compare two files with --train and --test")
    train = problem_items([p for p in problems if p["split"] != "test"], solutions)
    kept = run_query(con, "SELECT DISTINCT ref, sample_id, prompt, completion FROM kept "
                          "WHERE iteration > 0 ORDER BY ref, sample_id").to_pylist()  # demos (0) are checked above
    train += [Item(f"kept@{k['ref']}", k["sample_id"], (k["prompt"], k["completion"])) for k in kept]
    tests = problem_items([p for p in problems if p["split"] == "test"], solutions)
    params = Path(root) / "params.yaml"
    if against and params.is_file():
        from restem.schemas.params import load_params

        tests += against_items(load_params(params).problems.decontaminate, Path(root))
    return train, tests


def contamination(train: Sequence[Item], tests: Sequence[Item], n: int = DEFAULT_N,
                  listing: bool = False) -> list[dict]:
    """`restem audit contamination`: the summary per (training set, test set), or with `listing` the pairs."""
    index = build_index(tests, n)
    rows = overlaps(train, index)
    return rows if listing else summarise(train, index, rows)


def contamination_rows(root: Path, rev: Optional[str], train: Optional[Path], test: Optional[Path],
                       field: Optional[list[str]], n: int, listing: bool, solutions: bool = False) -> list[dict]:
    """The audit's rows: two files (`train`, `test`, their `field`s) or the workspace at `root` (`rev`)."""
    if (train is None) != (test is None):
        raise RestemError("contamination: give both --train FILE and --test FILE (two files), or neither (the "
                          "workspace's training data against its test sets)")
    if train is not None:
        fields = field or ["prompt"]
        train_items, test_items = file_items(train, fields, "train"), file_items(test, fields, "test")
    else:
        with open_workspace(root, rev) as con:
            train_items, test_items = workspace_items(con, root, against=rev is None, solutions=solutions)
    rows = contamination(train_items, test_items, n, listing)
    if not rows:
        typer.echo(f"no n-gram of {n} words is shared", err=True)
    return rows
