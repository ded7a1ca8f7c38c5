"""Rationalization (STaR, Zelikman et al. 2022): the rules, apart from the sampling (stages/rationalize.py).

- Which problems get a hint (`unsolved`): the problems of an iteration's Grow samples of which no sample
  has a correct verdict (an error or unverifiable verdict is not a solution either).
- The hinted prompt (`hinted_prompt`): `rationalize.hint` filled with the problem's prompt and reference.
- Which rationales are kept (`rationalized_kept`): those the task verifier calls correct (the `correct` rule),
  with the filter's own dedup, per-problem cap and `require_valid_steps`. A kept row's prompt is the problem's
  original prompt, so Improve trains on the rationale WITHOUT the hint; its rule starts with `rationalized;`
  (RATIONALIZED), which is how SQL tells rationalized rows from ordinary ones:
  `SELECT ... FROM kept WHERE starts_with(rule, 'rationalized;')`.
"""

from __future__ import annotations

from typing import Sequence

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.params import FilterParams
from restem.schemas.tables import Kept, Sample

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


def rationalized_kept(rationales: Sequence[dict], scores: Sequence[dict], problems: dict[str, dict],
                      f: FilterParams) -> list[Kept]:
    """The kept rows of the rationales the verifier calls correct: the filter's `correct` rule with its dedup,
    cap and require_valid_steps; each row's prompt is its problem's original (unhinted) prompt."""
    from restem.filtering import select

    if not rationales:
        return []
    missing = sorted({r["problem_id"] for r in rationales} - set(problems))
    if missing:
        raise RestemError(f"{len(missing)} rationales name problems that are not in data/problems/train.parquet "
                          f"(first: {missing[0]}); rerun `rationalize` (`dvc repro`)")
    rule = f.model_copy(update={"mode": "correct"})
    kept, _ = select(rationales, scores, rule)
    return [k.model_copy(update={"prompt": problems[k.problem_id]["prompt"], "rule": f"{RATIONALIZED};{k.rule}"})
            for k in kept]
