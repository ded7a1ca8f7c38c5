"""The filter's rules: which samples of an iteration (or of a ReST step) are kept, and why the others are not.

Modes (params: filter.mode); each decision is `(keep, reason)` and counts per reason are logged:
- `correct` (ReST-EM): reward 1 and a correct verdict.
- `threshold` (ReST): reward >= tau, tau absolute or a quantile of the iteration's rewards; a step
  ('1b') filters its iteration's samples again with its own, higher tau.
- `top_fraction` (RAFT): the best `fraction` of samples by reward, per prompt or over all prompts.
- `best_of_n`: the `max_per_problem` highest-reward samples of each problem (reward > 0).
- `majority` (label-free self-consistency): samples whose extracted answer is the majority answer of
  their problem; the verifier's verdict is not used to decide, only to report precision. With
  `require_consistent`, a sample failing the task's consistency check neither votes nor is kept. The
  check is the verifier's declared ability (verifiers/base.py); asking for it (or for `require_valid_steps`)
  with a verifier that lacks it is an error, never a silent pass.
- `agreement` (label-free, across models): samples whose answer is the one at least `voters.min_agree`
  other models gave (default: all of them) when each answered the problem greedily (stage `voters`).
  Like `majority`, labels only measure it.
Before any mode, a sample cut off at max_new_tokens (finish_reason `length`) is dropped as `truncated`, unless
`keep_truncated` (a kept one carries its finish_reason, so training appends no end token to it).
Then, in every mode: `require_valid_steps`, dedup (exact completions, or equal reasoning paths:
sequences of equations as in RFT, the rule of verifiers/paths.py), and the per-problem cap. Precision against the verifier (kept samples it calls
correct) is reported whenever labels exist, so label-free filters and reward models stay honest.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows
from restem.schemas.params import FilterParams
from restem.schemas.tables import Kept, Rejected, Sample, Score, truncated
from restem.verifiers.base import Consistency
from restem.verifiers.paths import reasoning_path
from restem.workspace import VOTE_SCORES, VOTES, iter_dir, voters_data_dir


LABEL_FREE = ("majority", "agreement")


def dedup_key(completion: str, how: str) -> str:
    """What two samples of a problem must share to be duplicates: the text, or its reasoning path (RFT)."""
    return reasoning_path(completion) if how == "equations" else completion


def rule_name(f: FilterParams, tau: Optional[float] = None, quantile_of: Optional[float] = None) -> str:
    """The rule and its settings, as recorded in every kept row; `quantile_of` is the quantile that gave tau."""
    parts = [f.mode]
    if f.mode == "threshold":
        parts.append(f"tau={tau:g}" + (f"(q{quantile_of:g})" if quantile_of is not None else ""))
    elif f.mode == "top_fraction":
        parts.append(f"fraction={f.fraction:g};scope={f.scope}")
    elif f.mode == "majority":
        parts.append(f"min_votes={f.min_votes};strict={str(f.strict_majority).lower()};"
                     f"consistent={str(f.require_consistent).lower()}")
    elif f.mode == "agreement":
        parts.append(f"voters={f.voters.count};min_agree={f.voters.needed};"
                     f"consistent={str(f.require_consistent).lower()}")
    parts.append(f"cap={f.max_per_problem};dedup={f.dedup};valid_steps={str(f.require_valid_steps).lower()}")
    if f.keep_truncated:  # only then, so the rule of a default run reads as before
        parts.append("truncated=kept")
    if not f.pass_rate.everything:  # the default band leaves the rule (and kept.parquet) as it was
        parts.append(f"pass_rate=[{f.pass_rate.low:g},{f.pass_rate.high:g}]")
    return ";".join(parts)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile ('lower' method: an observed value) of a non-empty list."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def resolve_threshold(f: FilterParams, tau: float, scores: Sequence[dict]) -> float:
    """tau as a reward: itself, or the given quantile of the rewards that count."""
    if f.threshold_kind == "absolute":
        return tau
    rewards = [s["reward"] for s in scores if _usable(s)]
    if not rewards:
        raise RestemError("filter: no usable rewards to take a quantile of (every sample errored)")
    return quantile(rewards, tau)


def _usable(score: dict) -> bool:
    # A verifier's error or unverifiable verdict has no reward; a reward model's score stands on its own.
    return score["reward_model"] is not None or score["verdict"] not in ("error", "unverifiable")


def _majority(rows: list[tuple[dict, dict]], f: FilterParams, consistent: Optional[Consistency],
              problem: dict) -> dict[str, str]:
    """Reason per dropped sample_id for one problem's (sample, score) rows: the samples not dropped are the
    majority answer's."""
    reasons: dict[str, str] = {}
    votes: Counter = Counter()
    first: dict[str, int] = {}
    for s, sc in rows:
        if consistent is not None and not consistent(s["completion"], problem):
            reasons[s["sample_id"]] = "inconsistent"
        elif sc["extracted"] is None:
            reasons[s["sample_id"]] = "no_majority"
        else:
            votes[sc["extracted"]] += 1
            first.setdefault(sc["extracted"], s["sample_index"])
    if not votes:
        return reasons
    top = max(votes.values())
    winner = min((a for a, v in votes.items() if v == top), key=lambda a: first[a])
    tied = sum(1 for v in votes.values() if v == top) > 1
    if top < f.min_votes or (f.strict_majority and 2 * top <= len(rows)) or (not f.strict_majority and tied):
        winner = None
    for s, sc in rows:
        if s["sample_id"] not in reasons:
            reasons[s["sample_id"]] = "no_majority" if winner is None else (
                "minority" if sc["extracted"] != winner else "")
    return {k: v for k, v in reasons.items() if v}


def _agreement(rows: list[tuple[dict, dict]], f: FilterParams, consistent: Optional[Consistency], problem: dict,
               votes: Sequence[tuple[str, str, dict]]) -> dict[str, str]:
    """Reason per dropped sample_id for one problem: the samples not dropped give the voters' consensus
    answer and pass the consistency check (when it is required). Each voter's
    answer counts when it has one (and passes the consistency check when that is required); the consensus
    is the answer given by at least `min_agree` voters (the one with most votes if several are; a tie: none)."""
    check = consistent
    tally: Counter = Counter()
    for _voter, completion, sc in votes:
        if sc["extracted"] is not None and (check is None or check(completion, problem)):
            tally[sc["extracted"]] += 1
    reached = {a: n for a, n in tally.items() if n >= f.voters.needed}
    top = max(reached.values(), default=0)
    best = [a for a, n in reached.items() if n == top]
    winner = best[0] if len(best) == 1 else None
    reasons: dict[str, str] = {}
    for s, sc in rows:
        if check is not None and not check(s["completion"], problem):
            reasons[s["sample_id"]] = "inconsistent"
        elif winner is None:
            reasons[s["sample_id"]] = "no_agreement"
        elif sc["extracted"] != winner:
            reasons[s["sample_id"]] = "disagrees"
    return reasons


def select(samples: Sequence[dict], scores: Sequence[dict], f: FilterParams, tau: Optional[float] = None,
           consistent: Optional[Consistency] = None, problems: Optional[dict[str, dict]] = None,
           quantile_of: Optional[float] = None,
           votes: Optional[dict[str, Sequence[tuple[str, str, dict]]]] = None) -> tuple[list[Kept], list[Rejected]]:
    """Apply the filter to joined samples and scores. `tau` is the resolved threshold (threshold mode),
    `consistent` the task's label-free check (majority, agreement) and `problems` the problems by id it
    needs; `votes` (agreement) maps problem_id to the voters' (voter, completion, score row)."""
    by_id = {s["sample_id"]: s for s in scores}
    missing = [s["sample_id"] for s in samples if s["sample_id"] not in by_id]
    if missing:
        raise RestemError(f"{len(missing)} samples have no score (first: {missing[0]}); rerun `score`")
    if f.mode == "threshold" and tau is None:
        raise ValueError("threshold mode needs the resolved tau")
    if needs_consistency(f) and consistent is None:
        raise ValueError(f"{f.mode} mode with require_consistent needs the verifier's consistency check")
    if not needs_consistency(f):
        consistent = None
    groups: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for s in sorted(samples, key=lambda r: (r["problem_id"], r["sample_index"], r["sample_id"])):
        groups[s["problem_id"]].append((s, by_id[s["sample_id"]]))

    reason: dict[str, str] = {}  # sample_id -> why dropped
    candidates: dict[str, list[tuple[dict, dict]]] = {}  # problem -> eligible rows in preference order
    for problem_id, rows in groups.items():
        usable = []
        for s, sc in rows:
            if truncated(s) and not f.keep_truncated:
                reason[s["sample_id"]] = "truncated"
            elif not _usable(sc):
                reason[s["sample_id"]] = sc["verdict"]
            else:
                usable.append((s, sc))
        if f.mode == "correct":
            eligible = [(s, sc) for s, sc in usable if sc["reward"] >= 1.0 and sc["correct"]]
            right = {s["sample_id"] for s, _ in eligible}
            reason.update({s["sample_id"]: "incorrect" for s, _ in usable if s["sample_id"] not in right})
        elif f.mode == "threshold":
            eligible = [(s, sc) for s, sc in usable if sc["reward"] >= tau]
            reason.update({s["sample_id"]: "below_threshold" for s, sc in usable if sc["reward"] < tau})
        elif f.mode in ("top_fraction", "best_of_n"):
            eligible = sorted(usable, key=lambda r: (-r[1]["reward"], r[0]["sample_index"], r[0]["sample_id"]))
            if f.mode == "best_of_n":
                reason.update({s["sample_id"]: "incorrect" for s, sc in eligible if sc["reward"] <= 0})
                eligible = [(s, sc) for s, sc in eligible if sc["reward"] > 0]
        else:  # majority, agreement
            problem = (problems or {}).get(problem_id, {"problem_id": problem_id, "prompt": rows[0][0]["prompt"]})
            if f.mode == "majority":
                why = _majority(usable, f, consistent, problem)
            else:
                why = _agreement(usable, f, consistent, problem, (votes or {}).get(problem_id, []))
            # The winning answer's samples, less any that fail the consistency check.
            eligible = [(s, sc) for s, sc in usable if s["sample_id"] not in why]
            reason.update(why)
        if f.require_valid_steps:
            for s, sc in eligible:
                if sc["steps_valid"] is False:
                    reason[s["sample_id"]] = "invalid_steps"
            eligible = [(s, sc) for s, sc in eligible if sc["steps_valid"] is not False]
        if f.dedup != "none":
            seen, unique = set(), []
            for s, sc in eligible:
                key = dedup_key(s["completion"], f.dedup)
                if key in seen:
                    reason[s["sample_id"]] = "duplicate"
                else:
                    seen.add(key)
                    unique.append((s, sc))
            eligible = unique
        candidates[problem_id] = eligible

    if f.mode == "top_fraction" and f.scope == "prompt":
        for problem_id, eligible in candidates.items():
            take = math.ceil(f.fraction * len(groups[problem_id]))
            reason.update({s["sample_id"]: "not_top" for s, _ in eligible[take:]})
            candidates[problem_id] = eligible[:take]
    elif f.mode == "top_fraction":
        ranked = sorted(((s, sc) for rows in candidates.values() for s, sc in rows),
                        key=lambda r: (-r[1]["reward"], r[0]["problem_id"], r[0]["sample_index"]))
        take = math.ceil(f.fraction * len(samples))
        chosen = {s["sample_id"] for s, _ in ranked[:take]}
        reason.update({s["sample_id"]: "not_top" for s, _ in ranked[take:]})
        candidates = {p: [(s, sc) for s, sc in rows if s["sample_id"] in chosen] for p, rows in candidates.items()}

    rule = rule_name(f, tau, quantile_of)
    kept, rejected = [], []
    for problem_id, rows in groups.items():
        admitted = candidates[problem_id]
        for s, _ in admitted[f.max_per_problem:]:
            reason[s["sample_id"]] = "over_cap"
        admitted_ids = {s["sample_id"] for s, _ in admitted[: f.max_per_problem]}
        for s, sc in rows:
            common = {"sample_id": s["sample_id"], "problem_id": problem_id, "iteration": s["iteration"],
                      "reward": sc["reward"]}
            if s["sample_id"] in admitted_ids:
                kept.append(Kept(**common, prompt=s["prompt"], completion=s["completion"],
                                 completion_ids=s.get("completion_ids"), rule=rule,
                                 threshold=tau if f.mode == "threshold" else None, finish_reason=s["finish_reason"]))
            else:
                rejected.append(Rejected(**common, filter_reason=reason[s["sample_id"]]))
    return kept, rejected


def pass_rate_band(samples: Sequence[dict], scores: Sequence[dict], f: FilterParams,
                   rates: Sequence[dict]) -> tuple[list[dict], list[Rejected]]:
    """The samples of problems whose pass rate (`rates`: PassRate rows, restem.stats.pass_rates) lies in
    filter.pass_rate, and a `pass_rate_band` Rejected row for each sample of the others. Runs before `select`,
    so the modes only see problems inside the band."""
    if f.pass_rate.everything:
        return list(samples), []
    band = f.pass_rate
    outside = {r["problem_id"] for r in rates if not band.low <= r["pass_rate"] <= band.high}
    reward = {s["sample_id"]: s["reward"] for s in scores}
    dropped = [Rejected(sample_id=s["sample_id"], problem_id=s["problem_id"], iteration=s["iteration"],
                        reward=reward[s["sample_id"]], filter_reason="pass_rate_band")
               for s in samples if s["problem_id"] in outside]
    return [s for s in samples if s["problem_id"] not in outside], dropped


def report(kept: Sequence[Kept], rejected: Sequence[Rejected], scores: Sequence[dict], rule: str,
           tau: Optional[float], samples: Optional[Sequence[dict]] = None) -> dict:
    """What the filter did, and how it looks against the verifier's labels (when there are any); with the
    `samples`, how many of them were truncated (finish_reason length) and how many of those were kept."""
    by_id = {s["sample_id"]: s for s in scores}
    labelled = [by_id[k.sample_id]["correct"] for k in kept if by_id[k.sample_id]["correct"] is not None]
    out = {
        "rule": rule, "threshold": tau, "samples": len(kept) + len(rejected), "kept": len(kept),
        "kept_problems": len({k.problem_id for k in kept}),
        "dropped": dict(sorted(Counter(r.filter_reason for r in rejected).items())),
        # Share of kept samples the verifier calls correct: the precision of a label-free filter or a reward model.
        "kept_precision": round(sum(labelled) / len(labelled), 6) if labelled else None,
        "kept_verifier_incorrect": sum(1 for c in labelled if not c),
    }
    if samples is not None:
        cut = sum(1 for s in samples if truncated(s))
        out["truncated"] = {"samples": cut, "share": round(cut / len(samples), 6) if samples else None,
                            "kept": sum(1 for k in kept if k.finish_reason == "length")}
    modelled = [s for s in scores if s["reward_model"] is not None and s["correct"] is not None]
    if modelled:  # a reward model gave the rewards: how often does it agree with the verifier?
        out["reward_model_agreement"] = round(
            sum((s["reward"] >= 0.5) == bool(s["correct"]) for s in modelled) / len(modelled), 6)
    return out


def needs_consistency(f: FilterParams) -> bool:
    """Whether the filter applies the verifier's label-free consistency check (majority, agreement)."""
    return f.mode in LABEL_FREE and f.require_consistent


def vote_files(f: FilterParams, iteration: int | str, root: Path) -> tuple[Path, Path, str]:
    """(samples, scores, the stage that writes them) of the votes the agreement filter of `iteration` counts: the
    co-improving voters' answers to that iteration's problems (data/iter<i>/votes.parquet, stage votes) with
    filter.voters.improve, else the answers of the voters as stage voters built them (data/voters)."""
    if f.co_improving:
        folder = iter_dir(iteration, root)
        return folder / VOTES, folder / VOTE_SCORES, f"votes@{iteration}"
    folder = voters_data_dir(root)
    return folder / "samples.parquet", folder / "scores.parquet", "voters"


def load_votes(f: FilterParams, iteration: int | str, root: Path) -> dict[str, list[tuple[str, str, dict]]]:
    """problem_id -> [(voter policy hash, completion, score row)] (vote_files)."""
    samples_path, scores_path, stage = vote_files(f, iteration, root)
    if (samples_path.parent / "unused.json").is_file() or not samples_path.is_file():
        raise RestemError(f"{samples_path}: no voter answers; filter.mode `agreement` needs stage `{stage}` "
                          "(run `dvc repro`)")
    samples = read_rows(samples_path, Sample)
    if f.co_improving and not samples:
        raise RestemError(f"{samples_path}: empty, but filter.voters.improve is true; rerun `{stage}` "
                          "(`dvc repro` does)")
    scores = {s["sample_id"]: s for s in read_rows(scores_path, Score)}
    votes: dict[str, list[tuple[str, str, dict]]] = {}
    for s in samples:
        if s["sample_id"] not in scores:
            raise RestemError(f"{scores_path}: no score for voter sample {s['sample_id']}; rerun `{stage}`")
        votes.setdefault(s["problem_id"], []).append((s["policy"], s["completion"], scores[s["sample_id"]]))
    return votes
