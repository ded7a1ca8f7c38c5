"""The rows a model trains on: an iteration's kept samples (plus, with `accumulate`, what its previous model
trained on) and the demonstrations as training rows (what the base model trained on, and what replay draws)."""

from __future__ import annotations

from pathlib import Path

from restem.schemas.hashing import content_hash
from restem.schemas.io import read_rows
from restem.schemas.params import Params
from restem.schemas.tables import Kept, Problem
from restem.workspace import iter_dir, problems_dir


DEMONSTRATION = "demonstration"


def training_rows(params: Params, iteration: int | str, root: Path) -> list[dict]:
    """This iteration's kept rows, plus (accumulate) the rows its prev model trained on."""
    rows = {r["sample_id"]: r for r in read_rows(iter_dir(iteration, root) / "kept.parquet", Kept)}
    entry = params.loop.iterations.get(str(iteration))
    if entry is not None and entry.accumulate:
        for r in read_rows(iter_dir(entry.prev, root) / "train.parquet", Kept):
            if r["rule"] != DEMONSTRATION:  # demonstrations come back through replay, not here
                rows.setdefault(r["sample_id"], r)
    # The kept table's order (problem, sample), so the shuffle sees the rows as Filter wrote them.
    return sorted(rows.values(), key=lambda r: (r["problem_id"], r["sample_id"]))


def demonstration_rows(root: Path, params: Params | None = None) -> list[Kept]:
    """The demonstrations as training rows (what the base model trained on); with `params`, also the hinted
    ones the tiny base trains on (rationalize.hint_demos)."""
    demos = read_rows(problems_dir(root) / "demos.parquet", Problem)
    rows = [Kept(sample_id=content_hash("demonstration", d["problem_id"]), problem_id=d["problem_id"], iteration=0,
                 prompt=d["prompt"], completion=d["solution"], reward=1.0, rule=DEMONSTRATION,
                 finish_reason="eos")
            for d in demos if d["solution"] is not None]
    if params is not None and params.rationalize.hint_demos:
        from restem.rationalize import hinted_demonstrations

        r = params.rationalize
        rows += [Kept(sample_id=content_hash("hinted demonstration", d["problem_id"]), problem_id=d["problem_id"],
                      iteration=0, prompt=d["prompt"], completion=d["solution"], reward=1.0, rule=DEMONSTRATION,
                      finish_reason="eos")
                 for d in hinted_demonstrations(demos, r.hint, r.hint_demos)]
    return rows
