"""Rationalization (STaR, Zelikman et al. 2022): the rules, apart from the sampling (stages/rationalize.py).

- Which problems get a hint (`unsolved`): the problems of an iteration's Grow samples of which no sample
  has a correct verdict (an error or unverifiable verdict is not a solution either).
- The hinted prompt (`hinted_prompt`): `rationalize.hint` filled with the problem's prompt and reference.
- Which rationales are kept (stages/filter.py `rationalized_kept`): those the task verifier calls correct (the
  `correct` rule), with the filter's own dedup, per-problem cap and `require_valid_steps`. A kept row's prompt
  is the problem's original prompt, so Improve trains on the rationale WITHOUT the hint; its rule starts with
  `rationalized;` (RATIONALIZED), which is how SQL tells rationalized rows from ordinary ones:
  `SELECT ... FROM kept WHERE starts_with(rule, 'rationalized;')`.
- Hinted demonstrations (`hinted_demonstrations`): an LLM learns to read a hint from STaR's few-shot
  rationalization examples; the embedded tiny model has never seen one and is thrown off by it (measured on 204
  unsolved 3-digit problems, 4 samples each: 0 or 1 solved with each of four hint templates, 17 with no hint).
  With `rationalize.hint_demos` > 0 the tiny base also trains on that share of the demonstrations in hinted form.
"""

from __future__ import annotations

from typing import Sequence

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.tables import Sample

RATIONALIZED = "rationalized"  # first part of a kept rationale's rule


def unsolved(samples: Sequence[dict], scores: Sequence[dict]) -> list[str]:
    """The problem_ids among `samples` none of whose samples has a correct verdict, sorted."""
    right = {sc["sample_id"] for sc in scores if sc["correct"]}
    solved = {s["problem_id"] for s in samples if s["sample_id"] in right}
    return sorted({s["problem_id"] for s in samples} - solved)


def hinted_prompt(template: str, problem: dict) -> str:
    """The prompt with the reference answer given as a hint (`template` over {prompt} and {reference})."""
    return template.format(prompt=problem["prompt"], reference=problem["reference"])


def hinted_problems(problem_ids: Sequence[str], problems: dict[str, dict], template: str) -> list[dict]:
    """The problems to sample again, each with its hinted prompt (and the other fields the sampler reads)."""
    missing = [p for p in problem_ids if p not in problems]
    if missing:
        raise RestemError(f"{len(missing)} Grow samples name problems that are not in data/problems/train.parquet "
                          f"(first: {missing[0]}); rerun `problems` and `grow` (`dvc repro`)")
    return [{**problems[p], "prompt": hinted_prompt(template, problems[p])} for p in problem_ids]


def rationale_rows(rows: Sequence[Sample]) -> list[Sample]:
    """Sample rows from the sampler made into rationale rows: purpose `rationale`, and a sample_id that also
    hashes the hinted prompt, so it never equals a Grow sample's id."""
    return [r.model_copy(update={"purpose": "rationale",
                                 "sample_id": content_hash("rationale", r.sample_id, r.prompt)}) for r in rows]


def hinted_demonstrations(demos: Sequence[dict], template: str, share: float) -> list[dict]:
    """round(share * n) of the demonstrations with a solution (chosen by a hash of their problem_id), each with
    its hinted prompt, in problem_id order; [] when share is 0."""
    with_solution = [d for d in demos if d["solution"] is not None]
    chosen = sorted(with_solution, key=lambda d: content_hash("hinted-demo", d["problem_id"]))
    chosen = chosen[: round(share * len(with_solution))]
    return [{**d, "prompt": hinted_prompt(template, d)} for d in sorted(chosen, key=lambda d: d["problem_id"])]
