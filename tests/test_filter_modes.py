"""Each filter mode on small hand-made tables keeps exactly the rows it should, with the right reasons."""

from __future__ import annotations

import pytest

from restem.schemas.params import FilterParams
from restem.filtering import quantile, report, resolve_threshold, select
from restem.verifiers.arithmetic import consistent, scratchpad
from restem.verifiers.paths import equations


def table(rows):
    """rows: (problem, index, completion, reward, correct, extracted[, verdict, steps_valid, reward_model,
    finish_reason])."""
    samples, scores = [], []
    for r in rows:
        problem, index, completion, reward, correct, extracted = r[:6]
        verdict = r[6] if len(r) > 6 else ("correct" if correct else "incorrect")
        steps_valid = r[7] if len(r) > 7 else None
        rm = r[8] if len(r) > 8 else None
        finish = r[9] if len(r) > 9 else "stop"
        sid = f"{problem}-{index}"
        samples.append({"sample_id": sid, "problem_id": problem, "iteration": 1, "sample_index": index,
                        "prompt": f"prompt {problem}", "completion": completion, "finish_reason": finish})
        scores.append({"sample_id": sid, "reward": reward, "correct": correct, "verdict": verdict,
                       "extracted": extracted, "steps_valid": steps_valid, "reward_model": rm})
    return samples, scores


def params(**kw):
    base = {"mode": "correct", "max_per_problem": 10, "dedup": "none"}
    return FilterParams(**{**base, **kw})


def kept_ids(kept):
    return sorted(k.sample_id for k in kept)


def reasons(rejected):
    return {r.sample_id: r.filter_reason for r in rejected}


def test_correct_mode_with_cap_dedup_and_valid_steps():
    samples, scores = table([
        ("a", 0, "x", 1.0, True, "1", "correct", True),
        ("a", 1, "x", 1.0, True, "1", "correct", True),      # duplicate of a-0
        ("a", 2, "y", 1.0, True, "1", "correct", False),     # right answer, wrong steps
        ("a", 3, "z", 1.0, True, "1", "correct", True),
        ("a", 4, "w", 1.0, True, "1", "correct", True),      # over the cap of 2
        ("a", 5, "v", 0.0, False, "2"),
        ("b", 0, "u", 0.0, None, None, "error"),
        ("b", 1, "t", 0.0, None, None, "unverifiable"),
    ])
    kept, rejected = select(samples, scores, params(max_per_problem=2, dedup="exact", require_valid_steps=True))
    assert kept_ids(kept) == ["a-0", "a-3"]
    assert reasons(rejected) == {"a-1": "duplicate", "a-2": "invalid_steps", "a-4": "over_cap", "a-5": "incorrect",
                                 "b-0": "error", "b-1": "unverifiable"}
    assert all(k.rule.startswith("correct;cap=2;dedup=exact") for k in kept)


def test_threshold_mode_absolute_and_quantile():
    samples, scores = table([(p, i, f"c{p}{i}", r, None, None, "incorrect", None, "rm")
                             for p, rewards in (("a", [0.9, 0.4, 0.7]), ("b", [0.2, 0.75, 0.5]))
                             for i, r in enumerate(rewards)])
    kept, rejected = select(samples, scores, params(mode="threshold"), tau=0.7)
    assert kept_ids(kept) == ["a-0", "a-2", "b-1"]
    assert set(reasons(rejected).values()) == {"below_threshold"}
    assert all(k.threshold == 0.7 for k in kept)
    # Quantile: tau is an observed reward; q=0.5 of [0.2 0.4 0.5 0.7 0.75 0.9] (lower) is 0.5.
    f = params(mode="threshold", threshold_kind="quantile", threshold=0.5)
    assert resolve_threshold(f, 0.5, scores) == 0.5
    kept, _ = select(samples, scores, f, tau=resolve_threshold(f, 0.5, scores))
    assert kept_ids(kept) == ["a-0", "a-2", "b-1", "b-2"]
    assert quantile([3, 1, 2], 0.0) == 1 and quantile([3, 1, 2], 1.0) == 3


def test_reward_model_rows_are_usable_even_when_the_verifier_errs():
    samples, scores = table([("a", 0, "x", 0.9, None, None, "error", None, "rm"),
                             ("a", 1, "y", 0.9, None, None, "error")])
    kept, rejected = select(samples, scores, params(mode="threshold"), tau=0.5)
    assert kept_ids(kept) == ["a-0"] and reasons(rejected) == {"a-1": "error"}


def test_top_fraction_per_prompt_and_global():
    rows = [("a", 0, "a0", 0.1, None, None), ("a", 1, "a1", 0.9, None, None), ("a", 2, "a2", 0.5, None, None),
            ("a", 3, "a3", 0.8, None, None), ("b", 0, "b0", 0.3, None, None), ("b", 1, "b1", 0.2, None, None),
            ("b", 2, "b2", 0.25, None, None), ("b", 3, "b3", 0.35, None, None)]
    samples, scores = table(rows)
    kept, rejected = select(samples, scores, params(mode="top_fraction", fraction=0.5, scope="prompt"))
    assert kept_ids(kept) == ["a-1", "a-3", "b-0", "b-3"]  # the best 2 of 4 in each prompt
    assert reasons(rejected)["a-0"] == "not_top"
    kept, _ = select(samples, scores, params(mode="top_fraction", fraction=0.25, scope="global"))
    assert kept_ids(kept) == ["a-1", "a-3"]  # the best 2 of all 8: both from prompt a
    kept, rejected = select(samples, scores, params(mode="top_fraction", fraction=0.5, scope="global",
                                                    max_per_problem=1))
    # The global top 4 are a1 a3 a2 b3; a cap of 1 per problem leaves a1 and b3.
    assert kept_ids(kept) == ["a-1", "b-3"]
    r = reasons(rejected)
    assert r["a-3"] == r["a-2"] == "over_cap" and r["b-0"] == "not_top"


def test_best_of_n_keeps_the_best_and_breaks_ties_by_index():
    samples, scores = table([("a", 0, "a0", 0.6, None, None), ("a", 1, "a1", 0.6, None, None),
                             ("a", 2, "a2", 0.2, None, None), ("b", 0, "b0", 0.0, False, None),
                             ("b", 1, "b1", 0.0, False, None)])
    kept, rejected = select(samples, scores, params(mode="best_of_n", max_per_problem=1))
    assert kept_ids(kept) == ["a-0"]
    assert reasons(rejected) == {"a-1": "over_cap", "a-2": "over_cap", "b-0": "incorrect", "b-1": "incorrect"}


def test_majority_vote_ignores_labels_and_reports_precision():
    # Problem a: answer 7 wins 3 of 5 (one of them is "wrong" by the verifier: the vote does not look).
    # Problem b: 2 vs 2: no strict majority. Problem c: 2 of 3 but one voter is inconsistent.
    samples, scores = table([
        ("a", 0, "a0", 1.0, True, "7"), ("a", 1, "a1", 0.0, False, "8"), ("a", 2, "a2", 1.0, True, "7"),
        ("a", 3, "a3", 0.0, False, "7"), ("a", 4, "a4", 0.0, False, None),
        ("b", 0, "b0", 1.0, True, "1"), ("b", 1, "b1", 0.0, False, "2"), ("b", 2, "b2", 1.0, True, "1"),
        ("b", 3, "b3", 0.0, False, "2"),
        ("c", 0, "bad", 1.0, True, "5"), ("c", 1, "c1", 1.0, True, "5"), ("c", 2, "c2", 0.0, False, "6"),
        # Problem d: 4 wins; its inconsistent sample has the winning answer but is not kept.
        ("d", 0, "d0", 1.0, True, "4"), ("d", 1, "d1", 1.0, True, "4"), ("d", 2, "bad", 1.0, True, "4"),
    ])
    check = lambda completion, problem: completion != "bad"  # noqa: E731
    kept, rejected = select(samples, scores, params(mode="majority", min_votes=2), consistent=check)
    assert kept_ids(kept) == ["a-0", "a-2", "a-3", "d-0", "d-1"]
    r = reasons(rejected)
    assert r["d-2"] == "inconsistent"
    assert r["a-1"] == "minority" and r["a-4"] == "no_majority"
    assert {r["b-0"], r["b-1"], r["b-2"], r["b-3"]} == {"no_majority"}
    assert r["c-0"] == "inconsistent" and r["c-1"] == "no_majority"  # 1 vote of 3 left: below min_votes
    # Not strict: a plurality of 2 in c would need min_votes 1 and no tie; 5 vs 6 tie -> nothing.
    kept, _ = select(samples, scores, params(mode="majority", min_votes=1, strict_majority=False), consistent=check)
    assert "c-1" not in kept_ids(kept) and "a-0" in kept_ids(kept)
    summary = report(kept, rejected, scores, "majority", None)
    assert summary["kept_verifier_incorrect"] >= 1 and summary["kept_precision"] < 1.0


def test_rft_dedup_by_equations():
    a = "3+9+0=12,1+5+1=7;72"
    samples, scores = table([("a", 0, a, 1.0, True, "72"),
                             ("a", 1, "3+9+0=12 , 1+5+1=7 ;72", 1.0, True, "72"),  # same equations, other spacing
                             ("a", 2, "3+9+0=12,1+5+1=7;0072", 1.0, True, "72"),   # same path, other answer text
                             ("a", 3, "9+3+0=12,5+1+1=7;72", 1.0, True, "72")])    # another path
    kept, rejected = select(samples, scores, params(dedup="equations"))
    assert kept_ids(kept) == ["a-0", "a-3"]
    assert reasons(rejected) == {"a-1": "duplicate", "a-2": "duplicate"}
    kept, _ = select(samples, scores, params(dedup="exact"))
    assert len(kept) == 4
    assert equations("Natalia sold <<48/2=24>>24 and <<48+24=72>>72. #### 72") == ("48/2=24", "48+24=72")


def test_arithmetic_consistency_check_is_label_free():
    assert consistent("47+15=", scratchpad(47, 15))
    assert consistent("47+15=", "7+5+0=99,4+1+1=0;17")  # wrong sums, right digits: still consistent
    assert not consistent("47+15=", "7+5+0=12;62")       # a step missing
    assert not consistent("47+15=", "7+6+0=13,4+1+1=6;63")  # a digit not from the prompt


@pytest.mark.parametrize("bad", [{"mode": "threshold", "threshold_kind": "quantile", "threshold": 1.5},
                                 {"fraction": 0.0}, {"dedup": "fuzzy"}])
def test_bad_filter_params_are_rejected(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        params(**bad)


def test_old_boolean_dedup_still_reads():
    assert params(dedup=True).dedup == "exact" and params(dedup=False).dedup == "none"


@pytest.mark.parametrize("mode", ["correct", "majority", "best_of_n"])
def test_truncated_samples_are_dropped_unless_kept_on_purpose(mode):
    rows = [("a", 0, "cut 1", 1.0, True, "1", "correct", None, None, "length"),
            ("a", 1, "whole 1", 1.0, True, "1", "correct", None, None, "stop"),
            ("a", 2, "also 1", 1.0, True, "1", "correct", None, None, "stop"),
            ("b", 0, "cut 2", 1.0, True, "2", "correct", None, None, "length"),
            ("b", 1, "cut 9", 0.0, False, "9", "incorrect", None, None, "length")]
    samples, scores = table(rows)
    extra = {"require_consistent": False, "min_votes": 1, "strict_majority": False} if mode == "majority" else {}
    kept, rejected = select(samples, scores, params(mode=mode, **extra))
    assert kept_ids(kept) == ["a-1", "a-2"]
    assert reasons(rejected) == {"a-0": "truncated", "b-0": "truncated", "b-1": "truncated"}
    assert {k.finish_reason for k in kept} == {"stop"} and ";truncated=kept" not in kept[0].rule
    summary = report(kept, rejected, scores, "r", None, samples)
    assert summary["truncated"] == {"samples": 3, "share": 0.6, "kept": 0}
    assert summary["dropped"] == {"truncated": 3}

    kept, rejected = select(samples, scores, params(mode=mode, keep_truncated=True, **extra))
    assert "a-0" in kept_ids(kept)  # (b's two answers tie under majority)
    assert {k.sample_id: k.finish_reason for k in kept}["a-0"] == "length"
    assert kept[0].rule.endswith(";truncated=kept")
    assert "truncated" not in reasons(rejected).values()
    assert report(kept, rejected, scores, "r", None, samples)["truncated"]["kept"] == (1 if mode == "majority" else 2)
