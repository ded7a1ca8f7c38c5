"""Verifier abilities (verifiers/base.py) are declared, never looked up: a filter setting that needs one
is applied when the verifier has it, and is a clear error when it has not."""

from __future__ import annotations

import importlib
import json

import pytest

from restem.schemas.errors import RestemError
from restem.schemas.io import write_rows
from restem.schemas.params import Params
from restem.schemas.tables import Problem, Sample, Score
from restem.verifiers.base import CONSISTENCY, STEPS, _VERIFIERS, consistency_check, get_verifier, has_ability
from restem.verifiers.reversed_addition import make_prompt, make_solution

PROMPT = make_prompt(4713, 59, 1)  # `39b15c70d40e=`
GOLD = make_solution(4713, 59, 1)  # `b21c70d70e40`
SHUFFLED = "b21d70c70e40"          # tags out of order: inconsistent, yet it spells the same sum 4772
OTHER = "b21c70d70e50"             # consistent, a different sum (5772)


def _sample(sid: str, index: int, completion: str, problem_id: str = "p1", policy: str = "pol",
            purpose: str = "grow") -> Sample:
    return Sample(sample_id=sid, problem_id=problem_id, iteration=1, purpose=purpose, policy=policy, engine="test",
                  sample_index=index, seed=index, temperature=1.0, prompt=PROMPT, completion=completion,
                  finish_reason="stop", prompt_tokens=13, completion_tokens=12)


def _scores(samples: list[Sample]) -> list[Score]:
    from restem.verifiers.batch import score_samples

    problem = {"problem_id": "p1", "prompt": PROMPT, "reference": "4772", "meta": {}}
    return score_samples("reversed_addition", [s.model_dump() for s in samples], {"p1": problem}, workers=1)


def _workspace(root, voter_completions: list[str] = ()) -> None:
    """data/problems/train.parquet with one reversed-addition problem, iteration 1's samples (two gold,
    one inconsistent with the same answer, one consistent minority) and their scores, and the voters'."""
    problem = Problem(problem_id="p1", split="train", subset="train", prompt=PROMPT, reference="4772",
                      difficulty=4, source="test")
    write_rows(root / "data" / "problems" / "train.parquet", Problem, [problem])
    samples = [_sample("s0", 0, GOLD), _sample("s1", 1, SHUFFLED), _sample("s2", 2, GOLD + " "),
               _sample("s3", 3, OTHER)]
    write_rows(root / "data" / "iter1" / "samples.parquet", Sample, samples)
    write_rows(root / "data" / "iter1" / "scores.parquet", Score, _scores(samples))
    if voter_completions:
        voters = [_sample(f"v{i}", 0, c, policy=f"voter{i}", purpose="vote") for i, c in enumerate(voter_completions)]
        write_rows(root / "data" / "voters" / "samples.parquet", Sample, voters)
        write_rows(root / "data" / "voters" / "scores.parquet", Score, _scores(voters))


def _params(tiny_raw, verifier: str = "reversed_addition", **filter_settings) -> Params:
    tiny_raw["score"]["verifier"] = verifier
    tiny_raw["problems"]["arithmetic"]["format"] = "reversed"
    tiny_raw["filter"].update({"max_per_problem": 10, "dedup": "none", **filter_settings})
    return Params.model_validate(tiny_raw)


def _decisions(root) -> dict[str, str]:
    import pyarrow.parquet as pq

    kept = {r: "kept" for r in pq.read_table(root / "data" / "iter1" / "kept.parquet").column("sample_id").to_pylist()}
    rejected = pq.read_table(root / "data" / "iter1" / "rejected.parquet").to_pylist()
    return {**kept, **{r["sample_id"]: r["filter_reason"] for r in rejected}}


def test_majority_with_reversed_addition_drops_the_inconsistent_sample(tiny_raw, tmp_path):
    from restem.stages import filter as filter_stage

    _workspace(tmp_path)
    filter_stage.run(_params(tiny_raw, mode="majority", min_votes=2, strict_majority=False), 1, tmp_path)
    # Before the fix the check was never found: s1 voted for 4772 and was kept.
    assert _decisions(tmp_path) == {"s0": "kept", "s2": "kept", "s1": "inconsistent", "s3": "minority"}
    metrics = json.loads((tmp_path / "metrics" / "filter" / "iter1.json").read_text())
    assert "consistent=true" in metrics["rule"] and metrics["dropped"] == {"inconsistent": 1, "minority": 1}
    # Without the requirement the inconsistent sample counts and is kept.
    filter_stage.run(_params(tiny_raw, mode="majority", min_votes=2, strict_majority=False,
                     require_consistent=False), 1, tmp_path)
    assert _decisions(tmp_path)["s1"] == "kept"


def test_agreement_with_reversed_addition_drops_inconsistent_samples_and_votes(tiny_raw, tmp_path):
    from restem.stages import filter as filter_stage

    # Two voters: one gives 4772 consistently; the other's 5772 comes from an inconsistent completion.
    _workspace(tmp_path, [GOLD, "b21d70c70e50"])
    filter_stage.run(_params(tiny_raw, mode="agreement", voters={"seeds": [1, 2], "min_agree": 1}), 1, tmp_path)
    # Only the consistent voter counts, so 4772 is the consensus (before the fix: a 4772-5772 tie, no consensus).
    assert _decisions(tmp_path) == {"s0": "kept", "s2": "kept", "s1": "inconsistent", "s3": "disagrees"}


@pytest.mark.parametrize("settings, key", [
    ({"mode": "majority"}, "filter.require_consistent"),
    ({"mode": "agreement", "voters": {"seeds": [1]}}, "filter.require_consistent"),
    ({"mode": "correct", "require_valid_steps": True}, "filter.require_valid_steps"),
])
def test_asking_a_verifier_for_an_ability_it_lacks_is_a_clear_error(tiny_raw, tmp_path, settings, key):
    from restem.stages import filter as filter_stage

    params = _params(tiny_raw, "exact", **settings)
    with pytest.raises(RestemError, match=rf"{key}: true needs .*verifier 'exact'.*set {key}: false"):
        filter_stage.run(params, 1, tmp_path)  # raised before any table is read: the workspace is empty
    assert not (tmp_path / "data").exists()


def test_voters_refuse_before_training_when_the_filter_will_need_a_missing_check(tiny_raw, tmp_path):
    from restem.stages import voters

    params = _params(tiny_raw, "exact", mode="agreement", voters={"seeds": [1]})
    with pytest.raises(RestemError, match="filter.require_consistent: true needs"):
        voters.run(params, tmp_path)
    assert not (tmp_path / "models").exists()


def test_a_mode_that_needs_the_check_cannot_be_run_without_it():
    from restem.schemas.params import FilterParams
    from restem.filtering import select

    with pytest.raises(ValueError, match="consistency check"):
        select([], [], FilterParams(mode="majority", max_per_problem=1, dedup="none"))


def test_declared_abilities_match_the_classes():
    for name, entry in _VERIFIERS.items():
        cls = getattr(importlib.import_module(entry.module), entry.cls)
        assert callable(getattr(cls, "consistent", None)) == has_ability(name, CONSISTENCY), name
    check = consistency_check("reversed_addition")
    assert check(GOLD, {"prompt": PROMPT}) and not check(SHUFFLED, {"prompt": PROMPT})
    assert consistency_check("arithmetic")("7+5+0=12,4+1+1=6;62", {"prompt": "47+15="})


@pytest.mark.parametrize("name, completion, problem", [
    ("arithmetic", "7+5+0=12,4+1+1=6;62", {"prompt": "47+15=", "reference": "62"}),
    ("reversed_addition", GOLD, {"prompt": PROMPT, "reference": "4772"}),
    ("gsm8k", "She has 2+3=5 apples.\n#### 5", {"prompt": "?", "reference": "5"}),
    ("math", "So 2+3=5 and the answer is $\\boxed{5}$.", {"prompt": "?", "reference": "5"}),
])
def test_a_declared_step_check_fills_steps_valid(name, completion, problem):
    assert has_ability(name, STEPS)
    assert get_verifier(name)(completion, {**problem, "meta": {}}).steps_valid is True


# ------------------------------------------------------------------ the registry is the one list of verifiers


def test_every_registered_verifier_loads_and_says_its_own_name():
    from restem.verifiers.base import RUNS, get_verifier_entry, verifier_names

    assert verifier_names() == sorted(_VERIFIERS)
    for name in verifier_names():
        entry = get_verifier_entry(name)
        assert entry.runs in RUNS and entry.load().name == name


def test_params_accept_exactly_the_registered_verifiers(tiny_raw, tmp_path):
    from conftest import write_params
    from restem.schemas.params import load_params
    from restem.verifiers.base import verifier_names

    for name in verifier_names():
        tiny_raw["score"]["verifier"] = name
        assert Params.model_validate(tiny_raw).score.verifier == name
    tiny_raw["score"]["verifier"] = "gsm8K"
    with pytest.raises(RestemError) as caught:
        load_params(write_params(tmp_path / "params.yaml", tiny_raw))
    message = str(caught.value)
    assert "score.verifier: " in message and "unknown verifier 'gsm8K'" in message
    assert all(repr(name) in message for name in verifier_names())
    with pytest.raises(RestemError, match=r"unknown verifier 'nope'; choose one of \['apps', "):
        get_verifier("nope")
