"""The label-free `agreement` filter: other models (voters) answer each Grow problem greedily, and a policy
sample is kept only when its answer is their consensus. Hand-made tables pin the rule; a tiny workspace
shows the `voters` stage really trains and links its voters and that the filter keeps what they agree on."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows
from restem.schemas.params import FilterParams, Params
from restem.schemas.tables import Kept, Problem, Sample, Score
from restem.filtering import load_votes, report, select
from restem.workspace import partial_dir


def table(rows):
    """rows: (problem, index, completion, correct, extracted)."""
    samples, scores = [], []
    for problem, index, completion, correct, extracted in rows:
        sid = f"{problem}-{index}"
        samples.append({"sample_id": sid, "problem_id": problem, "iteration": 1, "sample_index": index,
                        "prompt": f"prompt {problem}", "completion": completion, "finish_reason": "eos"})
        scores.append({"sample_id": sid, "reward": float(correct), "correct": correct,
                       "verdict": "correct" if correct else "incorrect", "extracted": extracted,
                       "steps_valid": None, "reward_model": None})
    return samples, scores


def vote(voter, answer, completion="ok"):
    return (voter, completion, {"extracted": answer})


def agreement(**kw):
    voters = kw.pop("voters", {"seeds": [1, 2]})
    return FilterParams(**{"mode": "agreement", "max_per_problem": 10, "dedup": "none", "voters": voters, **kw})


def consistent(completion, problem):
    return not completion.startswith("bad")


SAMPLES, SCORES = table([
    ("a", 0, "ok 5", True, "5"),
    ("a", 1, "ok 6", False, "6"),       # disagrees with the voters
    ("a", 2, "bad 5", True, "5"),       # the voters' answer, but fails the task's consistency check
    ("b", 0, "ok 5", True, "5"),        # voters split 5 / 7
    ("c", 0, "ok 3", False, "3"),       # one voter has no answer
    ("d", 0, "ok 9", False, "9"),       # both voters agree on a wrong answer: kept, and precision shows it
    ("e", 0, "ok 4", True, "4"),        # one voter's completion is inconsistent: its vote does not count
])
VOTES = {
    "a": [vote("v1", "5"), vote("v2", "5")],
    "b": [vote("v1", "5"), vote("v2", "7")],
    "c": [vote("v1", "3"), vote("v2", None)],
    "d": [vote("v1", "9"), vote("v2", "9")],
    "e": [vote("v1", "4"), vote("v2", "4", completion="bad 4")],
}


def test_unanimous_voters_decide_and_labels_only_measure():
    kept, rejected = select(SAMPLES, SCORES, agreement(), consistent=consistent, votes=VOTES)
    assert sorted(k.sample_id for k in kept) == ["a-0", "d-0"]
    assert {r.sample_id: r.filter_reason for r in rejected} == {
        "a-1": "disagrees", "a-2": "inconsistent", "b-0": "no_agreement", "c-0": "no_agreement",
        "e-0": "no_agreement"}
    assert all(k.rule.startswith("agreement;voters=2;min_agree=2;consistent=true") for k in kept)
    summary = report(kept, rejected, SCORES, kept[0].rule, None)
    assert summary["kept_precision"] == 0.5 and summary["kept_verifier_incorrect"] == 1
    assert summary["dropped"] == {"disagrees": 1, "inconsistent": 1, "no_agreement": 3}


def test_min_agree_one_takes_the_answer_most_voters_gave_and_a_tie_is_no_consensus():
    kept, rejected = select(SAMPLES, SCORES, agreement(voters={"seeds": [1, 2], "min_agree": 1}),
                            consistent=consistent, votes=VOTES)
    assert sorted(k.sample_id for k in kept) == ["a-0", "c-0", "d-0", "e-0"]
    assert {r.sample_id: r.filter_reason for r in rejected}["b-0"] == "no_agreement"  # 5 vs 7: a tie


def test_without_the_consistency_check_every_answer_counts():
    kept, _ = select(SAMPLES, SCORES, agreement(require_consistent=False), consistent=consistent, votes=VOTES)
    assert sorted(k.sample_id for k in kept) == ["a-0", "a-2", "d-0", "e-0"]


def test_a_problem_the_voters_never_answered_keeps_nothing():
    kept, rejected = select(SAMPLES, SCORES, agreement(), consistent=consistent, votes={})
    assert not kept and {r.filter_reason for r in rejected} == {"no_agreement", "inconsistent"}


@pytest.mark.parametrize("voters, message", [
    ({}, "needs voters"),
    ({"seeds": [1], "min_agree": 2}, "exceeds the number of voters"),
    ({"seeds": [1, 1]}, "repeat a seed"),
])
def test_bad_voters_are_rejected(voters, message):
    with pytest.raises(ValueError, match=message):
        agreement(voters=voters)


def test_voter_seeds_need_the_tiny_base(tiny_raw):
    tiny_raw["base"]["checkpoint"] = "/somewhere"
    tiny_raw["filter"].update(mode="agreement", voters={"seeds": [1]})
    with pytest.raises(ValueError, match="filter.voters.checkpoints"):
        Params.model_validate(tiny_raw)


# ------------------------------------------------------------------ the stage, on a tiny trained workspace


@pytest.fixture(scope="module")
def voted(trained_root, tmp_path_factory):
    """A copy of the trained workspace whose voters are a tiny model trained with seed 1 and the base model
    itself given as an external checkpoint; Grow iteration 1 and Score have run."""
    from restem.stages import grow, score, voters

    src, params = trained_root
    root = tmp_path_factory.mktemp("voted")
    shutil.copytree(src / "data" / "problems", root / "data" / "problems")
    shutil.copytree(src / "models" / "iter0", root / "models" / "iter0")
    raw = params.model_dump(mode="json")
    shutil.copytree(src / "models" / "iter0", root / "inputs" / "voters" / "base")  # the voters' tracked folder
    raw["filter"].update(mode="agreement", voters={"seeds": [1], "checkpoints": ["inputs/voters/base"]})
    params = Params.model_validate(raw)
    summary = voters.run(params, root)
    grow.run(params, 1, 0, root)
    score.run(params, 1, root)
    return root, params, summary


def test_voters_are_really_trained_and_linked(voted):
    import torch
    from safetensors.torch import load_file

    from restem.training.modeling import model_hash, read_meta

    root, _, summary = voted
    seed1 = root / "models" / "voters" / "iter0" / "seed1"
    meta = read_meta(seed1)
    assert meta.params["train"]["seed"] == 1 and meta.iteration == "voter-seed1"
    assert meta.train_log[-1]["loss"] < 0.5 * meta.train_log[0]["loss"]  # it learned
    mine, base = load_file(seed1 / "model.safetensors"), load_file(root / "models" / "iter0" / "model.safetensors")
    assert mine.keys() == base.keys() and any(not torch.equal(mine[k], base[k]) for k in mine)  # another model
    linked = read_meta(root / "models" / "voters" / "iter0" / "ckpt1")
    assert linked.checkpoint and linked.model_hash == model_hash(root / "models" / "iter0")
    assert summary["used"] and set(summary["voters"]) == {"seed1", "ckpt1"}
    assert all(0 < v["verifier_accuracy"] <= 1 for v in summary["voters"].values())


def test_voter_answers_are_their_greedy_generations(voted):
    from restem.sampling import sampler
    from restem.sampling.engines import SamplingParams
    from restem.training.modeling import model_hash

    root, params, _ = voted
    samples = read_rows(root / "data" / "voters" / "samples.parquet", Sample)
    scores = read_rows(root / "data" / "voters" / "scores.parquet", Score)
    problems = read_rows(root / "data" / "problems" / "train.parquet", Problem)
    assert len(samples) == len(scores) == 2 * len(problems)
    assert {s["purpose"] for s in samples} == {"vote"} and {s["temperature"] for s in samples} == {0.0}
    base = root / "models" / "iter0"
    engine = sampler.make_engine("transformers", base, 64, params.runtime)
    direct = engine.generate([sampler.Request(p["prompt"], 0) for p in problems],
                             SamplingParams(0.0, params.grow.max_new_tokens))
    by_problem = {s["problem_id"]: s["completion"] for s in samples if s["policy"] == model_hash(base)}
    assert [by_problem[p["problem_id"]] for p in problems] == [c.text for c in direct]


def test_filter_keeps_only_answers_every_voter_gave(voted):
    from restem.stages import filter as filter_stage


    root, params, _ = voted
    filter_stage.run(params, 1, root)
    kept = read_rows(root / "data" / "iter1" / "kept.parquet", Kept)
    assert kept, "the tiny voters agree on some easy problems"
    scores = {s["sample_id"]: s for s in read_rows(root / "data" / "iter1" / "scores.parquet", Score)}
    votes = load_votes(params.filter, 1, root)
    for k in kept:
        answers = {sc["extracted"] for _, _, sc in votes[k["problem_id"]]}
        assert answers == {scores[k["sample_id"]]["extracted"]}  # both voters gave exactly this answer
    metrics = json.loads((root / "metrics" / "filter" / "iter1.json").read_text())
    assert metrics["rule"].startswith("agreement;voters=2;min_agree=2") and metrics["kept_precision"] is not None
    # One voter fewer in params than in data/voters: a clear error, not a silent mix.
    raw = params.model_dump(mode="json")
    raw["filter"]["voters"] = {"seeds": [1]}
    with pytest.raises(RestemError, match="answers of 2 voters, but filter.voters lists 1"):
        filter_stage.run(Params.model_validate(raw), 1, root)


def test_unused_voters_leave_markers_and_agreement_then_says_what_to_run(trained_root, tmp_path):
    from restem.stages import voters

    src, params = trained_root
    shutil.copytree(src / "data" / "problems", tmp_path / "data" / "problems")
    assert voters.run(params, tmp_path) == {"used": False}
    assert (tmp_path / "models" / "voters" / "iter0" / "unused.json").is_file()
    assert read_rows(tmp_path / "data" / "voters" / "samples.parquet", Sample) == []
    agreement = params.filter.model_copy(update={"mode": "agreement"})
    with pytest.raises(RestemError, match="no voter answers.*needs stage `voters`"):
        load_votes(agreement, 1, tmp_path)


def test_a_voter_checkpoint_that_is_not_a_model_names_the_param(trained_root, tmp_path):
    from restem.stages import voters

    src, params = trained_root
    shutil.copytree(src / "data" / "problems", tmp_path / "data" / "problems")
    raw = params.model_dump(mode="json")
    (tmp_path / "inputs" / "voters" / "nothing").mkdir(parents=True)
    raw["filter"].update(mode="agreement", voters={"checkpoints": ["inputs/voters/nothing"]})
    with pytest.raises(RestemError, match="filter.voters.checkpoints: .*no config.json"):
        voters.run(Params.model_validate(raw), tmp_path)
    assert not (tmp_path / "models" / "voters" / "iter0").exists()  # nothing half-written


def test_sql_shows_the_voters_answers_beside_the_grow_samples(voted):
    from restem.query.sql import connect

    root, _, summary = voted
    con = connect(root)
    rows = con.execute("SELECT purpose, count(*), count(DISTINCT policy) FROM graded GROUP BY 1 ORDER BY 1").fetchall()
    problems = summary["problems"]
    assert ("vote", 2 * problems, 2) in rows and any(r[0] == "grow" for r in rows)
    # A voter's accuracy by SQL is the one metrics/voters.json reports.
    acc = dict(con.execute("SELECT policy, avg(correct::int) FROM graded WHERE purpose = 'vote' GROUP BY 1").fetchall())
    assert sorted(round(a, 6) for a in acc.values()) == sorted(v["verifier_accuracy"] for v in summary["voters"].values())


def test_a_rerun_after_a_failure_reuses_the_voters_already_trained(trained_root, tmp_path, monkeypatch):
    from restem.stages import voters
    from restem.training import tiny

    src, params = trained_root
    shutil.copytree(src / "data" / "problems", tmp_path / "data" / "problems")
    raw = params.model_dump(mode="json")
    raw["base"]["train"]["epochs"] = 2  # the voter only has to exist here
    raw["filter"].update(mode="agreement", voters={"seeds": [3], "checkpoints": ["inputs/voters/not-yet"]})
    with pytest.raises(RestemError, match="no config.json"):  # seed3 trained, then the checkpoint fails
        voters.run(Params.model_validate(raw), tmp_path)
    assert not (tmp_path / "models" / "voters" / "iter0").exists()
    waiting = list(partial_dir(tmp_path).glob("seed3-*"))
    assert len(waiting) == 1 and (waiting[0] / "model.safetensors").is_file()
    shutil.copytree(src / "models" / "iter0", tmp_path / "inputs" / "voters" / "not-yet")

    def no_training(*args, **kwargs):
        raise AssertionError("seed3 was trained again")

    monkeypatch.setattr(tiny, "train_tiny", no_training)
    # Another recipe is another voter: it would be trained, not taken from the waiting folder.
    other = copy.deepcopy(raw)
    other["base"]["train"]["epochs"] = 3
    with pytest.raises(AssertionError, match="trained again"):
        voters.run(Params.model_validate(other), tmp_path)
    summary = voters.run(Params.model_validate(raw), tmp_path)
    assert set(summary["voters"]) == {"seed3", "ckpt1"}
    assert (tmp_path / "models" / "voters" / "iter0" / "seed3" / "model.safetensors").is_file()
    assert not partial_dir(tmp_path).exists()


# ------------------------------------------------------------------ co-improving chains (filter.voters.improve)


def test_co_improving_voters_train_like_the_policy_and_vote_with_their_new_models(voted, tmp_path):
    """votes@1 asks the voters as built (the same greedy answers as stage voters), the filter counts those votes,
    voters_improve@1 fine-tunes every voter on the rows the policy trained on (each its own shuffle), and the
    answers of the improved voters (their new models) are what a later iteration's filter counts."""
    import torch
    from safetensors.torch import load_file

    from restem.stages import filter as filter_stage, improve, voters_improve, votes
    from restem.training.modeling import model_hash, read_meta, resolve_checkpoint

    src, params, _ = voted
    root = tmp_path / "ws"
    shutil.copytree(src, root)
    raw = params.model_dump(mode="json")
    raw["filter"]["voters"]["improve"] = True
    raw["improve"].update(epochs=1, loss_target=None)  # a few steps: what matters is that each voter moves
    co = Params.model_validate(raw)

    first = votes.run(co, 1, 0, root)
    assert first["used"] and first["voters_of"] == "0"
    mine = read_rows(root / "data" / "iter1" / "votes.parquet", Sample)
    grown = {s["problem_id"] for s in read_rows(root / "data" / "iter1" / "samples.parquet", Sample)}
    assert {s["problem_id"] for s in mine} == grown and {s["iteration"] for s in mine} == {1}
    built = {(s["policy"], s["problem_id"]): s["completion"]
             for s in read_rows(root / "data" / "voters" / "samples.parquet", Sample)}
    assert {(s["policy"], s["problem_id"]): s["completion"] for s in mine}.items() <= built.items()
    filter_stage.run(co, 1, root)
    kept_co = read_rows(root / "data" / "iter1" / "kept.parquet", Kept)
    filter_stage.run(params, 1, root)  # the same voters' votes from data/voters: the same kept set
    assert read_rows(root / "data" / "iter1" / "kept.parquet", Kept) == kept_co and kept_co

    improve.run(co, 1, 0, root)
    done = voters_improve.run(co, 1, 0, root)
    assert done == {"used": True, "voters": 2, "rows": len(kept_co)}
    policy_meta = read_meta(root / "models" / "iter1")
    salts = set()
    for name in ("seed1", "ckpt1"):
        before, after = root / "models" / "voters" / "iter0" / name, root / "models" / "voters" / "iter1" / name
        meta = read_meta(after)
        assert meta.parent == model_hash(before) and meta.training_data == policy_meta.training_data
        assert meta.params["improve"] == policy_meta.params["improve"]
        salts.add(tuple(meta.params["salt"]))
        old = load_file(resolve_checkpoint(before) / "model.safetensors")  # ckpt1 is linked, not copied
        new = load_file(after / "model.safetensors")
        assert any(not torch.equal(old[k], new[k]) for k in old)  # it really trained
    assert salts == {("voter", "seed1"), ("voter", "ckpt1")}
    # ckpt1 is the policy's own base, trained on the same rows: only its shuffle seed tells it from the policy.
    assert model_hash(root / "models" / "voters" / "iter1" / "ckpt1") != model_hash(root / "models" / "iter1")
    assert not partial_dir(root).exists()

    again = votes.run(co, 1, 1, root)  # the improved voters asked (as votes@2 would ask them of iteration 2)
    assert {v["model"] for v in again["voters"].values()} == {
        model_hash(root / "models" / "voters" / "iter1" / n) for n in ("seed1", "ckpt1")}
    from restem.query.sql import connect

    con = connect(root)
    rows = dict(con.execute("SELECT coalesce(ref, 'built'), count(*) FROM samples WHERE purpose = 'vote' "
                            "GROUP BY 1").fetchall())
    assert rows == {"built": 2 * len(read_rows(root / "data" / "problems" / "train.parquet", Problem)),
                    "1": 2 * len(grown)}


def test_without_improve_the_co_improving_stages_write_markers_and_a_missing_voter_is_named(voted, tmp_path):
    from restem.stages import voters_improve, votes

    src, params, _ = voted
    root = tmp_path / "ws"
    shutil.copytree(src, root)
    assert votes.run(params, 1, 0, root) == {"used": False}
    assert read_rows(root / "data" / "iter1" / "votes.parquet", Sample) == []
    assert voters_improve.run(params, 1, 0, root) == {"used": False}
    assert json.loads((root / "models" / "voters" / "iter1" / "unused.json").read_text())["why"] == (
        "filter.voters.improve is false")
    raw = params.model_dump(mode="json")
    raw["filter"]["voters"]["improve"] = True
    with pytest.raises(RestemError, match=r"models/voters/iter1: no voter model seed1, ckpt1 .*voters_improve@1"):
        votes.run(Params.model_validate(raw), 2, 1, root)
    # A co-improving filter whose votes table is empty (stage votes ran without improve) says what to rerun.
    from restem.stages import filter as filter_stage

    with pytest.raises(RestemError, match="empty, but filter.voters.improve is true; rerun `votes@1`"):
        filter_stage.run(Params.model_validate(raw), 1, root)
