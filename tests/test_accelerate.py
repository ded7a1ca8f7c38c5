"""Improve under Hugging Face Accelerate: one process gives exactly the weights of a plain PyTorch loop;
two processes (`accelerate launch`, gloo on CPUs) split every global batch and give a model close to
the single-process one."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from conftest import TINY, write_params, pythonpath
from restem.schemas.params import Architecture, Params, TrainParams
from restem.stages import filter as filter_stage
from restem.stages import grow, improve, problems, score
from restem.training.modeling import build_char_tokenizer, build_model
from restem.training.sft import _collate, _lr_factor, encode_pairs, process_slice, train_sft
from restem.verifiers.arithmetic import scratchpad

ARCH = Architecture(hidden_size=32, intermediate_size=64, layers=2, heads=2, max_positions=48)
PAIRS = [(f"{a}+{b}=", scratchpad(a, b)) for a in range(0, 40, 3) for b in range(0, 40, 7)]


def _plain_loop(model, tok, pairs, p, max_len):
    """The training loop as it was before Accelerate: transformers' own loss, plain optimizer steps."""
    encoded = encode_pairs(tok, pairs, max_len)
    total = max(1, round(p.epochs * math.ceil(len(encoded) / p.batch_size)))
    warmup = int(p.warmup_ratio * total)
    gen = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    groups = [{"params": [q for q in model.parameters() if q.ndim >= 2], "weight_decay": p.weight_decay},
              {"params": [q for q in model.parameters() if q.ndim < 2], "weight_decay": 0.0}]
    optim = torch.optim.AdamW(groups, lr=p.lr, betas=(0.9, 0.98), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, total, warmup, p.schedule))
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where train_sft's Accelerator trains
    model.to(device).train()
    order = []
    for _ in range(total):
        if len(order) < p.batch_size:
            order += torch.randperm(len(encoded), generator=gen).tolist()
        idx, order = order[: p.batch_size], order[p.batch_size :]
        input_ids, mask, labels = (t.to(device) for t in _collate([encoded[i] for i in idx], tok.pad_token_id))
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
    model.to("cpu").eval()


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, and much slower on a busy machine with more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_one_process_gives_the_plain_loops_weights_bit_for_bit(one_thread):
    tok = build_char_tokenizer()
    p = TrainParams(epochs=2, lr=3e-3, batch_size=16, weight_decay=0.01, seed=3)
    a, b = build_model(tok, ARCH, seed=0), build_model(tok, ARCH, seed=0)
    train_sft(a, tok, PAIRS, p, 48, precision="float32")  # no bf16 autocast where there is a GPU
    _plain_loop(b, tok, PAIRS, p, 48)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], v) for k, v in build_model(tok, ARCH, seed=0).state_dict().items())


def test_process_slices_cover_the_global_batch():
    batch = list(range(13))
    for count in (1, 2, 3, 4):
        assert sum((process_slice(batch, r, count) for r in range(count)), []) == batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_accelerate_launch_matches_one_process(tmp_path, trained_root):
    trained, _ = trained_root
    # loss_target: both launches stop after the same epoch (6 steps each; the epoch loss is summed over the
    # processes' shares, else each process would see about half of it and the two would disagree)
    raw = {**TINY, "improve": {**TINY["improve"], "epochs": 12, "batch_size": 4, "loss_target": 0.003}}
    params = Params.model_validate(raw)
    one = tmp_path / "one"
    shutil.copytree(trained / "models", one / "models")
    write_params(one / "params.yaml", raw)
    problems.run(params, one)
    grow.run(params, 1, 0, one)
    score.run(params, 1, one)
    filter_stage.run(params, 1, one)
    two = tmp_path / "two"
    shutil.copytree(one, two)

    improve.run(params, 1, 0, one)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "restem.stages.improve", "--iteration", "1", "--init", "0"]
    env = {**os.environ, "PYTHONPATH": pythonpath(), "CUDA_VISIBLE_DEVICES": ""}  # CPUs, gloo
    proc = subprocess.run(cmd, cwd=two, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("improve@1: ") >= 2  # both processes trained

    meta = {name: json.loads((root / "models" / "iter1" / "restem.json").read_text()) for name, root in
            (("one", one), ("two", two))}
    curve_one = [e["loss"] for e in meta["one"]["train_log"]]
    curve_two = [e["loss"] for e in meta["two"]["train_log"]]
    assert len(curve_one) == len(curve_two) >= 4
    assert curve_one[-1] < curve_one[0]
    assert curve_two == pytest.approx(curve_one, rel=1e-3)
    stop_one, stop_two = meta["one"]["train_log"][-1], meta["two"]["train_log"][-1]
    assert stop_one["stop"] == stop_two["stop"] == "loss_target" and 3 < stop_one["epoch"] < 12, stop_one
    assert stop_two["epoch"] == stop_one["epoch"] and stop_two["step"] == stop_one["step"]
    assert stop_two["epoch_loss"] == pytest.approx(stop_one["epoch_loss"], rel=1e-3)
    from safetensors.torch import load_file

    w1 = load_file(one / "models" / "iter1" / "model.safetensors")
    w2 = load_file(two / "models" / "iter1" / "model.safetensors")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-3
    assert not all(torch.equal(w1[k], w2[k]) for k in w1)  # really split: float rounding differs
    assert sorted(p.name for p in (two / "models").iterdir()) == ["iter0", "iter1"]  # one writer, no temp left


def test_train_sft_starts_whatever_precision_this_process_set_up_before(one_thread):
    """Accelerate keeps its precision in a process-wide singleton; train_sft must not fight it (on a GPU
    machine a float32 base and a bf16 Improve in one process made Accelerate refuse to start)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    try:
        Accelerator(mixed_precision="bf16", cpu=True)  # someone else's choice, made first
        tok = build_char_tokenizer()
        model = build_model(tok, ARCH, seed=0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        log = train_sft(model, tok, PAIRS, TrainParams(epochs=1, lr=3e-3, batch_size=16, seed=0), 48,
                        log_every=1, precision="float32")
        assert log[-1]["loss"] < log[0]["loss"]
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    finally:
        AcceleratorState._reset_state(True)
