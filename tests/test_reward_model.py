"""The reward model's library (restem/training/reward.py): it trains through the one training loop, it scores
through a user's linked checkpoint, and an unused stage leaves the same markers as the voters do."""

from __future__ import annotations

import json
import math

import pytest
import torch

from restem.schemas.errors import RestemError
from restem.schemas.hashing import folder_hash
from restem.schemas.io import read_rows
from restem.schemas.params import Architecture, Params, TrainParams
from restem.schemas.tables import Sample, Score
from restem.training.modeling import build_char_tokenizer, build_model, save_policy
from restem.training.reward import (VerdictLoss, context_length, new_reward_model, predict, score_with_model,
                                    train_reward_model)
from restem.stats import auc
from restem.workspace import reward_data_dir, reward_dir

ARCH = Architecture(hidden_size=32, intermediate_size=64, layers=2, heads=2, max_positions=48)
# Separable by the completion's words alone; the prompts vary so the model must read the completion.
ROWS = [(f"{a}+{b}=", "right answer" if (a + b) % 3 else "wrong guess", float((a + b) % 3 != 0))
        for a in range(8) for b in range(4)]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy") / "iter0"
    tok = build_char_tokenizer()
    save_policy(build_model(tok, ARCH, seed=0), tok, folder, {"iteration": 0})
    return folder


def _trained(policy, seed=0):
    model, tok = new_reward_model(policy, seed)
    log = train_reward_model(model, tok, ROWS, TrainParams(epochs=10, lr=3e-3, batch_size=8, seed=seed),
                             context_length(model), precision="float32")
    return model, tok, log


@pytest.fixture(scope="module")
def trained(policy):
    return _trained(policy)


def test_trains_through_the_shared_loop_and_separates_the_classes(policy, trained):
    model, tok, log = trained
    assert log[-1]["loss"] < 0.5 * log[0]["loss"], log
    assert log[-1]["step"] == 40 and log[-1]["lr"] == 0.0  # the loop's schedule: cosine to zero over 10 x 4 steps
    probs = predict(model, tok, [(p, c) for p, c, _ in ROWS], context_length(model))
    assert auc(probs, [int(y) for _, _, y in ROWS]) == 1.0
    again, _, _ = _trained(policy)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_the_mean_is_over_completion_positions():
    """With logits 0 every position's loss is ln 2, so loss_sum / count is ln 2 exactly when count is the number
    of positions the loss sums over (from the prompt's last token to the end, padding excluded)."""

    class Zeros(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return torch.zeros(*input_ids.shape, 1)

    batch = [([1, 5, 6, 7, 2], 2, 1.0), ([1, 5, 2], 1, 0.0), ([1, 5, 6, 7, 8, 9, 2], 4, 1.0)]
    objective = VerdictLoss(pad_id=0, pos_weight=1.0)
    assert objective.count(batch) == 4 + 3 + 4
    assert math.isclose(float(objective.loss_sum(Zeros(), batch, "cpu")) / objective.count(batch), math.log(2),
                        rel_tol=1e-6)


def test_replay_and_weighted_loss_are_refused(policy):
    model, tok = new_reward_model(policy, 0)
    for change in ({"replay": 0.25}, {"loss": "reward_weighted"}):
        p = TrainParams(epochs=1, lr=1e-3, batch_size=8, **change)
        with pytest.raises(RestemError, match="reward_model.train: replay must be 0 and loss `bc`"):
            train_reward_model(model, tok, ROWS, p, 48)


def _rm_params(tiny_raw, checkpoint=None) -> Params:
    tiny_raw["score"]["reward"] = "model"
    tiny_raw["reward_model"]["checkpoint"] = checkpoint
    return Params.model_validate(tiny_raw)


def test_a_users_checkpoint_is_linked_and_scores(trained, tiny_raw, tmp_path):
    from restem.stages import reward_model

    model, tok, _ = trained
    ckpt = tmp_path / "inputs" / "reward_model" / "rm"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    summary = reward_model.run(_rm_params(tiny_raw, "inputs/reward_model/rm"), tmp_path)
    meta = json.loads((reward_dir(tmp_path) / "restem.json").read_text())
    assert meta["checkpoint"] == str(ckpt.resolve()) and meta["iteration"] == "reward"
    assert meta["model_hash"] == folder_hash(ckpt) == summary["model"]
    assert not (reward_dir(tmp_path) / "config.json").exists()  # linked, not copied
    assert json.loads((reward_data_dir(tmp_path) / "unused.json").read_text())["unused"] is True
    samples = [{"prompt": p, "completion": c} for p, c, _ in ROWS]
    rewards, rm_hash = score_with_model(reward_dir(tmp_path), samples)
    assert rm_hash == meta["model_hash"]
    assert rewards == predict(model, tok, [(p, c) for p, c, _ in ROWS], context_length(model))


def test_a_checkpoint_without_config_names_the_param(tiny_raw, tmp_path):
    from restem.stages import reward_model

    (tmp_path / "inputs" / "reward_model" / "rm").mkdir(parents=True)
    with pytest.raises(RestemError, match="no config.json.*params: reward_model.checkpoint must name a local "
                                          "sequence-classification folder"):
        reward_model.run(_rm_params(tiny_raw, "inputs/reward_model/rm"), tmp_path)
    assert not reward_dir(tmp_path).exists()


def test_unused_stages_leave_the_same_markers(tiny_params, tmp_path):
    from restem.stages import reward_model, voters

    assert reward_model.run(tiny_params, tmp_path) == {"used": False}
    assert voters.run(tiny_params, tmp_path) == {"used": False}
    for stage, folders in {"reward": [reward_dir(tmp_path), reward_data_dir(tmp_path)],
                           "voters": [tmp_path / "models" / "voters" / "iter0", tmp_path / "data" / "voters"]}.items():
        assert json.loads((tmp_path / "metrics" / f"{stage}.json").read_text()) == {"used": False}
        for folder in folders:
            assert json.loads((folder / "unused.json").read_text())["unused"] is True, folder
    assert sorted(p.name for p in (tmp_path / "data" / "voters").iterdir()) == [
        "samples.parquet", "scores.parquet", "unused.json"]
    assert read_rows(tmp_path / "data" / "voters" / "samples.parquet", Sample) == []
    assert read_rows(tmp_path / "data" / "voters" / "scores.parquet", Score) == []
    assert sorted(p.name for p in reward_data_dir(tmp_path).iterdir()) == ["unused.json"]


_LAUNCHED = '''
import json, sys
from pathlib import Path
import torch
from restem.schemas.params import TrainParams
from restem.training.reward import context_length, new_reward_model, train_reward_model
from restem.training.sft import is_main_process
from tests.test_reward_model import ROWS
model, tok = new_reward_model(Path(sys.argv[1]), 0)
log = train_reward_model(model, tok, ROWS, TrainParams(epochs=4, lr=3e-3, batch_size=8, seed=0),
                         context_length(model), "float32")
if is_main_process():
    torch.save(model.state_dict(), Path(sys.argv[2]))
    print("LOG", json.dumps([e["loss"] for e in log]))
'''


@pytest.mark.slow
def test_two_process_launch_matches_one_process(policy, tmp_path):
    """The reward model trains under `accelerate launch` like SFT: each process's slice through the wrapped
    (DDP) forward, gradients synchronised, so the weights are the single process's up to float rounding."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO, pythonpath
    from tests.test_accelerate import _free_port

    script = tmp_path / "launched.py"
    script.write_text(_LAUNCHED)
    env = {**os.environ, "PYTHONPATH": pythonpath(), "CUDA_VISIBLE_DEVICES": ""}  # CPUs, gloo
    logs = {}
    for n in (1, 2):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               *(["--multi_gpu"] if n > 1 else ["--cpu"]), str(script), str(policy), str(tmp_path / f"w{n}.pt")]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[n] = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("LOG"))[4:])
    assert logs[2] == pytest.approx(logs[1], rel=1e-4) and logs[1][-1] < logs[1][0]
    w1, w2 = torch.load(tmp_path / "w1.pt"), torch.load(tmp_path / "w2.pt")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
