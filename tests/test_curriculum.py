"""Curriculum slices of the Grow pool, accumulated training sets, demonstration replay and the
reward-weighted loss."""

from __future__ import annotations

import copy
import shutil

import pytest

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows, write_rows
from restem.schemas.loop import PoolSlice
from restem.schemas.params import Params
from restem.schemas.tables import Kept, Sample
from restem.stages.grow import pool_slice


def problems(counts: dict[int, int]) -> list[dict]:
    return [{"problem_id": f"d{d}-{i:03d}", "difficulty": d} for d, n in counts.items() for i in range(n)]


def test_pool_slice_takes_the_mix_of_difficulties():
    pool = problems({3: 50, 4: 50, 5: 50, 6: 50})
    mix = PoolSlice(size=40, mix={5: 0.75, 4: 0.125, 3: 0.125})
    chosen = pool_slice(pool, mix, seed=0, iteration=1)
    by_level = {d: sum(1 for p in chosen if p["difficulty"] == d) for d in (3, 4, 5, 6)}
    assert by_level == {3: 5, 4: 5, 5: 30, 6: 0}
    assert chosen == pool_slice(pool, mix, seed=0, iteration=1)  # reruns draw the same
    other = pool_slice(pool, mix, seed=0, iteration=2)
    assert {p["problem_id"] for p in other} != {p["problem_id"] for p in chosen}  # each iteration draws afresh
    # Rounding leftovers go to the hardest level, so the size is exact.
    odd = pool_slice(pool, PoolSlice(size=7, mix={3: 0.5, 4: 0.5}), 0, 1)
    assert len(odd) == 7


def test_pool_slice_too_few_problems_is_a_clear_error():
    with pytest.raises(RestemError, match=r"loop.iterations.'3'.pool wants 30 problems of difficulty 5 but the "
                                          r"Grow pool \(data/problems/train.parquet\) has 10"):
        pool_slice(problems({5: 10}), PoolSlice(size=30, mix={5: 1.0}), 0, 3)


@pytest.mark.parametrize("mix, message", [({5: 0.5}, "must add up to 1"), ({5: 1.2, 4: -0.2}, "positive share")])
def test_bad_mix_is_rejected(mix, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        PoolSlice(size=10, mix=mix)


def test_grow_samples_only_the_iterations_slice(trained_root, tmp_path):
    from restem.stages import grow
    from tests.conftest import TINY

    src, _ = trained_root
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    raw = copy.deepcopy(TINY)
    raw["loop"]["iterations"]["1"]["pool"] = {"size": 6, "mix": {1: 0.5, 2: 0.5}}
    params = Params.model_validate(raw)
    grow.run(params, 1, 0, tmp_path)
    rows = read_rows(tmp_path / "data" / "iter1" / "samples.parquet", Sample)
    train = {p["problem_id"]: p for p in read_rows(tmp_path / "data" / "problems" / "train.parquet",
                                                   __import__("restem.schemas.tables", fromlist=["Problem"]).Problem)}
    ids = {r["problem_id"] for r in rows}
    assert len(ids) == 6 and len(rows) == 6 * raw["grow"]["samples_per_problem"]
    assert sorted(train[i]["difficulty"] for i in ids) == [1, 1, 1, 2, 2, 2]


def kept_row(sid: str, iteration: int, rule: str = "correct") -> Kept:
    return Kept(sample_id=sid, problem_id="p" + sid, iteration=iteration, prompt="1+1=", completion="2", reward=1.0,
                rule=rule)


def test_accumulate_trains_on_all_kept_so_far_without_demonstrations(tiny_raw, tmp_path):
    from restem.training.data import training_rows

    tiny_raw["loop"]["iterations"] = {"1": {"prev": 0, "init": 0}, "2": {"prev": 1, "init": 1, "accumulate": True},
                                      "3": {"prev": 2, "init": 2}}
    params = Params.model_validate(tiny_raw)
    write_rows(tmp_path / "data" / "iter1" / "train.parquet", Kept,
               [kept_row("a", 1), kept_row("b", 1), kept_row("demo", 0, "demonstration")])
    write_rows(tmp_path / "data" / "iter2" / "kept.parquet", Kept, [kept_row("c", 2), kept_row("a", 1)])
    write_rows(tmp_path / "data" / "iter3" / "kept.parquet", Kept, [kept_row("d", 3)])
    assert [r["sample_id"] for r in training_rows(params, 2, tmp_path)] == ["a", "b", "c"]
    assert [r["sample_id"] for r in training_rows(params, 3, tmp_path)] == ["d"]  # no accumulate: its own only


def test_replay_puts_that_share_of_demonstrations_in_every_batch(monkeypatch, trained_root):
    from restem.training import sft as training
    from restem.training.modeling import load_policy

    root, params = trained_root
    model, tokenizer = load_policy(root / "models" / "iter0")
    seen = []
    real = training._collate

    def spy(batch, pad_id):
        seen.append(batch)
        return real(batch, pad_id)

    monkeypatch.setattr(training, "_collate", spy)
    pairs = [(f"{i}+1=", f"{i}+1+0={i + 1};{i + 1}") for i in range(8)]
    demos = [("5+5=", "5+5+0=10;10"), ("6+6=", "6+6+0=12;12")]
    demo_ids = {tuple(ids) for ids, _ in training.encode_pairs(tokenizer, demos, 48)}
    p = params.improve.model_copy(update={"replay": 0.25, "batch_size": 8, "steps": 5})
    log = training.train_sft(model, tokenizer, pairs, p, 48, replay=demos)
    assert len(seen) == 5 and log[-1]["step"] == 5
    for batch in seen:
        assert len(batch) == 8
        assert sum(tuple(ids) in demo_ids for ids, _ in batch) == 2  # round(8 * 0.25)
    with pytest.raises(RestemError, match="no demonstrations to replay"):
        training.train_sft(model, tokenizer, pairs, p, 48, replay=[])


def test_reward_weighted_loss_scales_each_row():
    import torch

    from restem.training.sft import completion_loss_sum

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, 3, 4, 5, -100], [-100, -100, 1, 2, 3]])
    plain = completion_loss_sum(logits, labels)
    assert torch.allclose(completion_loss_sum(logits, labels, torch.ones(2)), plain)
    assert torch.allclose(completion_loss_sum(logits, labels, torch.full((2,), 2.0)), 2 * plain)
    first_only = completion_loss_sum(logits, labels, torch.tensor([1.0, 0.0]))
    assert torch.allclose(first_only, completion_loss_sum(logits[:1], labels[:1]))
