"""Stage `filter`: the training set of an iteration (or of a ReST step), `data/iter<i>/kept.parquet`,
every dropped sample with its reason, `data/iter<i>/rejected.parquet`, and what the filter did,
`metrics/filter/iter<i>.json`. The rules (modes, dedup, cap, precision) are restem/filtering.py's.
An empty kept set is an error, except in an iteration with `accumulate: true`: its Improve still has
what earlier iterations kept (a label-free filter may find nothing it trusts at a new difficulty).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows, write_json, write_together
from restem.schemas.params import FilterParams, Params
from restem.schemas.tables import Kept, Rejected, Sample, Score
from restem.workspace import METRICS, iter_dir, log
from restem.verifiers.base import STEPS, Consistency, consistency_check, require_ability
from restem.filtering import (load_votes, needs_consistency, pass_rate_band, report, resolve_threshold, rule_name,
                              select, vote_files)
from restem.rationalize import RATIONALIZED
from restem.stats import pass_rates
from restem.workspace import RATIONALE_SCORES, RATIONALES



def checks(params: Params) -> Optional[Consistency]:
    """The verifier abilities the filter settings ask for: the consistency check it needs (None when it
    needs none). A verifier without an ability that is asked for is an error naming the params key."""
    if params.filter.require_valid_steps:
        require_ability(params.score.verifier, STEPS, "filter.require_valid_steps")
    if needs_consistency(params.filter):
        return consistency_check(params.score.verifier, "filter.require_consistent")
    return None


def _votes(root: Path, f: FilterParams, iteration: int | str,
           samples: Sequence[dict]) -> dict[str, list[tuple[str, str, dict]]]:
    """The voters' answers by problem, checked against params and this iteration's problems."""
    votes = load_votes(f, iteration, root)
    where, _, stage = vote_files(f, iteration, root)
    voters = {v for rows in votes.values() for v, _, _ in rows}
    if len(voters) != f.voters.count:
        raise RestemError(f"{where}: answers of {len(voters)} voters, but filter.voters lists "
                          f"{f.voters.count}; rerun `{stage}` (`dvc repro` does)")
    missing = sorted({s["problem_id"] for s in samples} - set(votes))
    if missing:
        raise RestemError(f"{where}: the voters did not answer {len(missing)} of this iteration's "
                          f"problems (first: {missing[0]}); rerun `{stage}` after `problems`")
    return votes


def rationalized_kept(rationales: Sequence[dict], scores: Sequence[dict], problems: dict[str, dict],
                      f: FilterParams) -> list[Kept]:
    """The kept rows of the rationales the verifier calls correct: the filter's `correct` rule with its dedup,
    cap and require_valid_steps; each row's prompt is its problem's original (unhinted) prompt."""
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


def rationalized(params: Params, source: Path, root: Path) -> tuple[list[Kept], dict]:
    """The kept rationales of stage rationalize (restem/rationalize.py) and what they add, for the metrics (an
    empty dict when there are none, so a run without rationalization writes the same metrics as before)."""
    from restem.verifiers.batch import load_problems

    path = source / RATIONALES
    if not path.is_file():
        if params.rationalize.enabled:
            raise RestemError(f"{path}: not found, but rationalize.enabled is true; run `rationalize` first "
                              "(`dvc repro` does)")
        return [], {}
    rows = read_rows(path, Sample)
    if not rows:
        return [], {}
    scores = read_rows(source / RATIONALE_SCORES, Score)
    kept = rationalized_kept(rows, scores, load_problems(root, "train"), params.filter)
    by_id = {s["sample_id"]: s for s in scores}
    return kept, {"hinted_problems": len({r["problem_id"] for r in rows}), "samples": len(rows),
                  "correct": sum(1 for s in scores if s["correct"]), "kept": len(kept),
                  "kept_problems": len({k.problem_id for k in kept}),
                  "kept_wrong_steps": sum(1 for k in kept if by_id[k.sample_id]["steps_valid"] is False)}


def run(params: Params, iteration: int | str, root: Path = Path(".")) -> Counter:
    """Filter iteration `iteration`'s samples, or (a step key like '1b') its iteration's samples again."""
    f = params.filter
    consistent = checks(params)  # before reading anything: a setting the verifier cannot honour is an error
    step = params.loop.steps.get(str(iteration))
    source = iter_dir(step.iteration if step else iteration, root)
    out_dir = iter_dir(iteration, root)
    samples = read_rows(source / "samples.parquet", Sample)
    scores = read_rows(source / "scores.parquet", Score)
    tau = quantile_of = None
    if f.mode == "threshold":
        setting = params.loop.threshold_of(str(iteration), f.threshold)
        tau = resolve_threshold(f, setting, scores)
        quantile_of = setting if f.threshold_kind == "quantile" else None
    problems, votes = None, None
    if consistent is not None:
        from restem.verifiers.batch import load_problems

        problems = load_problems(root, "train")
    if f.mode == "agreement":
        votes = _votes(root, f, step.iteration if step else iteration, samples)
    inside, banded = pass_rate_band(samples, scores, f, pass_rates(samples, scores))
    kept, rejected = select(inside, scores, f, tau, consistent, problems, quantile_of, votes)
    rejected += banded
    extra, extra_report = rationalized(params, source, root)
    counts = Counter(r.filter_reason for r in rejected)
    counts["kept"] = len(kept) + len(extra)
    entry = params.loop.iterations.get(str(iteration))
    if not kept and not extra and not (entry is not None and entry.accumulate):
        raise RestemError(
            f"filter@{iteration}: no sample was kept out of {len(samples)} ({dict(counts)}); the policy solved "
            "nothing in the Grow pool: sample more (grow.samples_per_problem, grow.temperature), use easier "
            "problems, a lower threshold, or a stronger base model"
        )
    write_together(out_dir, {"kept.parquet": (Kept, kept + extra), "rejected.parquet": (Rejected, rejected)})
    summary = {"iteration": str(iteration), **report(kept, rejected, scores, rule_name(f, tau, quantile_of), tau,
                                                          samples)}
    if extra_report:  # beside the ordinary samples' numbers above, which it leaves as they were
        summary["rationalized"] = extra_report
    write_json(root / METRICS / "filter" / f"iter{iteration}.json", summary)
    precision = summary["kept_precision"]
    if not kept and not extra:  # an accumulating iteration trains on what earlier ones kept
        log(f"filter@{iteration}: WARNING: no sample was kept out of {len(samples)} ({dict(counts)}); "
            f"improve@{iteration} trains on the samples kept before (accumulate: true) and any replay")
    log(f"filter@{iteration}: kept {len(kept)} samples of {summary['kept_problems']} problems"
        + (f" (tau {tau:g})" if tau is not None else "")
        + (f", verifier-correct {precision:.3f}" if precision is not None else "")
        + f"; dropped {summary['dropped']}"
        + f"; truncated {summary['truncated']['samples']} of {len(samples)} samples"
        + (f"; plus {len(extra)} rationalized samples of {extra_report['kept_problems']} problems no sample solved"
           if extra_report else ""))
    return counts


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("filter")
