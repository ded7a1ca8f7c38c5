"""`restem export`: kept samples as a Hugging Face data set folder, with a data card that records lineage.

Input: a workspace (as `dvc repro` or `dvc pull` leaves it) and a selection: the kept samples of some
iterations or ReST steps (`--iteration 1`, `--iteration 1b`, repeatable), of every iteration and step
(`--all`), or any SQL over the `restem sql` views that returns a `sample_id` column (`--query`).

Output folder (the layout `datasets.load_dataset` and the Hub read):

    README.md                                   data card: YAML header (configs, splits, features,
                                                license) and a body with the lineage of every row
    prompt_completion/<split>-00000-of-0000N.parquet   prompt, completion + trace columns
    messages/<split>-00000-of-0000N.parquet            chat `messages` (user, assistant) + trace columns
    (with --jsonl, the same rows as .jsonl beside each Parquet shard)

With `--pairs` the rows are preference pairs instead (restem/publish/pairs.py): a correct and an incorrect
Grow sample of the same problem and iteration, in configurations `preference` (prompt, chosen, rejected
strings: TRL's DPOTrainer layout) and `preference_messages` (the conversational form), at most
`--pairs-per-problem` per problem. Both cards record the contamination check (restem/decontam.py).

With `--model <ref>` it writes one model of the loop instead (restem/publish/model_export.py; `--merged`: a LoRA
adapter merged into its base as a whole checkpoint).

Splits: `train`, and `test` when `--test-fraction` > 0 (whole problems go to one side, chosen by a hash
of the problem id, so no problem leaks across). Every row keeps `sample_id` and `problem_id`.

The same inputs give the same bytes: rows are sorted, Parquet settings are pinned (schemas.io), the card
has no timestamps, and every listing in it is sorted.

This module checks the output folder and writes it; the selection and its rows are
`restem.publish.selection`, the configurations, splits and shards `restem.publish.layout`, and the card
with its lineage `restem.publish.card`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from restem.cli.errors import user_errors
from restem.schemas.errors import RestemError
from restem.schemas.io import atomic_dir, write_table, write_text
from restem.publish.card import contamination_check, lineage, render_card
from restem.publish.layout import jsonl_text, shape_tables, shard_names, split_of
from restem.publish.pairs import DEFAULT_PAIRS_PER_PROBLEM
from restem.publish.selection import Selection, check_selection, select_rows
from restem.query.sql import connect, discover

DEFAULT_SHARD_ROWS = 100_000
_LICENSE_OF_SOURCE = {"arithmetic": "apache-2.0"}  # the embedded generator's problems are this project's


def _check_output(out: Path, root: Path, force: bool) -> None:
    """RestemError unless `out` is a new or empty folder (or --force), and never the workspace itself."""
    out_r, root_r = out.resolve(), root.resolve()
    if out_r == root_r or out_r in root_r.parents:
        raise RestemError(f"--output {out}: that folder holds the workspace; give a new folder such as exports/iter2")
    if out.exists() and not out.is_dir():
        raise RestemError(f"--output {out}: is a file, not a folder; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RestemError(f"--output {out}: folder is not empty; pass --force to replace it, or choose a new folder")


def _license(license_: Optional[str], sources: list[str]) -> str:
    if license_ is None:
        licenses = {_LICENSE_OF_SOURCE.get(s) for s in sources}
        license_ = licenses.pop() if len(licenses) == 1 and None not in licenses else "unknown"
        if license_ == "unknown":
            print("warning: problems come from your own files; pass --license with the data's license "
                  "(the card says `unknown`)", file=sys.stderr)
    return license_


def run(root: Path, out: Path, selection: Selection, *, force: bool = False, jsonl: bool = False,
        test_fraction: float = 0.0, shard_rows: int = DEFAULT_SHARD_ROWS, license_: Optional[str] = None,
        name: Optional[str] = None, pairs: bool = False,
        pairs_per_problem: int = DEFAULT_PAIRS_PER_PROBLEM) -> dict:
    """Write the data set folder `out`; returns {'rows': n, 'splits': {split: n}, 'files': [relative paths]}.
    With `pairs`, the rows are preference pairs of the selected iterations' Grow samples (restem.publish.pairs).

    Every check runs before anything is written, and the folder is built aside and renamed into place,
    so an error leaves `out` as it was.
    """
    root, out = Path(root), Path(out)
    if not 0.0 <= test_fraction < 1.0:
        raise RestemError(f"--test-fraction {test_fraction}: give a share of problems in [0, 1), e.g. 0.1")
    if shard_rows < 1:
        raise RestemError(f"--shard-rows {shard_rows}: give a positive number of rows per Parquet file")
    _check_output(out, root, force)
    if pairs:
        from restem.publish.pairs import export_pairs

        rows, shape, card = export_pairs(root, selection, pairs_per_problem, test_fraction, license_, name, jsonl)
    else:
        rows, shape, card = _sft(root, selection, test_fraction, license_, name, jsonl)
    by_split = _by_split(rows, test_fraction)
    files = []
    with atomic_dir(out) as tmp:
        for split, split_rows in sorted(by_split.items()):
            for config, table in shape(split_rows).items():
                for stem, start, n in shard_names(split, table.num_rows, shard_rows):
                    shard = table.slice(start, n)
                    write_table(tmp / config / f"{stem}.parquet", shard)
                    files.append(f"{config}/{stem}.parquet")
                    if jsonl:
                        write_text(tmp / config / f"{stem}.jsonl", jsonl_text(shard))
                        files.append(f"{config}/{stem}.jsonl")
        write_text(tmp / "README.md", card)
        files.append("README.md")
    return {"rows": len(rows), "splits": split_counts(by_split), "files": sorted(files)}


def _by_split(rows: list[dict], test_fraction: float) -> dict[str, list[dict]]:
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        by_split.setdefault(split_of(r["problem_id"], test_fraction), []).append(r)
    return by_split


def split_counts(by_split: dict[str, list]) -> dict[str, int]:
    return {s: len(v) for s, v in sorted(by_split.items())}


def _sft(root: Path, selection: Selection, test_fraction: float, license_: Optional[str], name: Optional[str],
         jsonl: bool):
    """The kept samples' rows, their shapes and the card."""
    from restem.decontam import Item

    available = [i for i, _ in discover(root).files["kept"]]
    sel = check_selection(selection, available)
    con = connect(root)
    try:
        rows = select_rows(con, sel)
        lin = lineage(con, root, rows, sel)
        lin["contamination"] = contamination_check(
            con, root, [Item("exported", r["sample_id"], (r["prompt"], r["completion"])) for r in rows])
    finally:
        con.close()
    license_ = _license(license_, lin["sources"])
    name = name or ("restem " + ("selection" if sel.query else "kept samples, iteration"
                                 + ("s " if len(lin["refs"]) > 1 else " ")
                                 + ", ".join(str(r) for r in lin["refs"])))
    card = render_card(sel, lin, split_counts(_by_split(rows, test_fraction)), license_, name, jsonl)
    return rows, shape_tables, card


def export_command(
    output: Path = typer.Option(..., "--output", "-o", help="folder to write the data set to (new or empty)"),
    iteration: Optional[list[str]] = typer.Option(None, "--iteration", "-i",
                                                  help="export the kept samples of this iteration or ReST step, "
                                                       "e.g. 2 or 1b (repeatable)"),
    all_: bool = typer.Option(False, "--all", help="export the kept samples of every iteration and step"),
    query: Optional[str] = typer.Option(None, "--query", "-q",
                                        help="SQL over the `restem sql` views returning a sample_id column"),
    root: Path = typer.Option(Path("."), "--root", help="workspace folder"),
    jsonl: bool = typer.Option(False, "--jsonl", help="also write each shard as JSONL"),
    test_fraction: float = typer.Option(0.0, "--test-fraction",
                                        help="share of problems held out as a `test` split (0: train only)"),
    shard_rows: int = typer.Option(DEFAULT_SHARD_ROWS, "--shard-rows", help="rows per Parquet shard"),
    license_: Optional[str] = typer.Option(None, "--license",
                                           help="license id for the card (default: apache-2.0 for the embedded task, "
                                                "else unknown)"),
    name: Optional[str] = typer.Option(None, "--name", help="the card's title (pretty_name)"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty output folder"),
    pairs: bool = typer.Option(False, "--pairs", help="export preference pairs (prompt, chosen, rejected) of "
                               "correct and incorrect Grow samples of the same problem, for DPO (TRL's layout)"),
    pairs_per_problem: int = typer.Option(DEFAULT_PAIRS_PER_PROBLEM, "--pairs-per-problem",
                                          help="with --pairs: the most pairs per problem and iteration"),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="export this model of the loop (e.g. 2 or 1b) instead of kept samples: "
                                             "its folder, restem.json lineage included"),
    merged: bool = typer.Option(False, "--merged", help="with --model: merge a LoRA adapter into its base and write "
                                                        "a whole Hugging Face checkpoint"),
) -> None:
    """Export kept samples (or, with --pairs, preference pairs) as a Hugging Face data set with a data card,
    or with --model one model of the loop (--merged: an adapter merged into its base)."""
    if model is not None or merged:
        with user_errors():
            if model is None:
                raise RestemError("--merged needs --model: name the model to merge, e.g. --model 2")
            from restem.publish.model_export import export_model
            from restem.workspace import model_ref

            try:
                ref = model_ref(model)
            except ValueError as exc:
                raise RestemError(f"--model {model}: {exc}") from None
            export_model(root, ref, output, merged=merged, force=force)
        typer.echo(f"wrote model {model}{' (merged)' if merged else ''} to {output}")
        return
    with user_errors():
        result = run(root, output, Selection(iterations=tuple(iteration) if iteration else None, all_=all_,
                                             query=query),
                     force=force, jsonl=jsonl, test_fraction=test_fraction, shard_rows=shard_rows,
                     license_=license_, name=name, pairs=pairs, pairs_per_problem=pairs_per_problem)
    splits = ", ".join(f"{k}: {v}" for k, v in result["splits"].items())
    typer.echo(f"wrote {result['rows']} rows ({splits}) to {output}: {len(result['files'])} files")
