"""The rows a model trains on: an iteration's kept samples (plus, with `accumulate`, what its previous model
trained on) and the demonstrations as training rows (what the base model trained on, and what replay draws)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from restem.schemas.hashing import content_hash
from restem.schemas.io import read_rows
from restem.schemas.params import Params, PromptParams, RationalizeParams
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


def demonstration_rows(root: Path, tokenizer=None, spec: Optional[PromptParams] = None,
                       rationalize: Optional[RationalizeParams] = None) -> list[Kept]:
    """The demonstrations as training rows (what the base model trained on), each prompt rendered as the policy
    sees it (restem/prompting.py; `spec` is params `prompt`, None: the defaults, the question as is; a chat
    spec needs the policy's `tokenizer`). They have no sampled ids: training tokenises their text. With
    `rationalize` (params section; the tiny base), also its share of hinted demonstrations (hint_demos)."""
    from restem.prompting import render

    spec = spec or PromptParams()
    demos = read_rows(problems_dir(root) / "demos.parquet", Problem)
    rows = [Kept(sample_id=content_hash("demonstration", d["problem_id"]), problem_id=d["problem_id"], iteration=0,
                 prompt=render(tokenizer, spec, d["prompt"], root), completion=d["solution"], reward=1.0,
                 rule=DEMONSTRATION, finish_reason="eos")
            for d in demos if d["solution"] is not None]
    if rationalize is not None and rationalize.hint_demos:
        from restem.rationalize import hinted_demonstrations

        r = rationalize
        rows += [Kept(sample_id=content_hash("hinted demonstration", d["problem_id"]), problem_id=d["problem_id"],
                      iteration=0, prompt=render(tokenizer, spec, d["prompt"], root), completion=d["solution"],
                      reward=1.0, rule=DEMONSTRATION, finish_reason="eos")
                 for d in hinted_demonstrations(demos, r.hint, r.hint_demos)]
    return rows
