"""Training that fits big models: packing gives the loss of the unpacked rows (Llama and Qwen2, sdpa and
eager attention), micro-batches give the one-pass update, gradient checkpointing changes nothing."""

import pytest
import torch

from restem.schemas.params import Architecture, TrainParams
from restem.training.modeling import build_char_tokenizer, build_model
from restem.training.packing import collate_packed, pack_rows, padding_share
from restem.training.sft import CompletionLoss, encode_pairs, micro_batches, process_slice, target_count, train_sft
from restem.verifiers.arithmetic import scratchpad

ARCH = Architecture(hidden_size=32, intermediate_size=64, layers=2, heads=2, max_positions=128)
PAIRS = [(f"{a}+{b}=", scratchpad(a, b)) for a in range(0, 400, 37) for b in range(0, 90, 13)]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _qwen2(tok, attn: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return Qwen2ForCausalLM._from_config(config, attn_implementation=attn)


def _llama(tok, attn: str):
    model = build_model(tok, ARCH, seed=0)
    model.set_attn_implementation(attn)
    return model


def _rows(tok, weighted=False):
    encoded = encode_pairs(tok, PAIRS, 64)
    return [(ids, n, 0.25 + (i % 4) / 2 if weighted else None) for i, (ids, n) in enumerate(encoded)]


def test_first_fit_packs_in_row_order_within_capacity():
    rows = [([0] * n, 1, None) for n in (30, 20, 40, 10, 25, 5)]
    assert pack_rows(rows, 64) == [[0, 1, 3], [2, 5], [4]]  # 5 tokens still fit beside the 40
    assert pack_rows(rows, 64) == pack_rows(list(rows), 64)  # deterministic
    assert pack_rows(rows, 30) == [[0], [1, 3], [2], [4, 5]]  # a row over capacity sits alone
    assert padding_share(rows, [[0, 1, 3], [2, 5], [4]]) == pytest.approx(1 - 130 / (3 * 60))
    assert padding_share(rows) == pytest.approx(1 - 130 / (6 * 40))


def test_labels_never_cross_a_row_boundary():
    tok = build_char_tokenizer()
    rows = _rows(tok)[:3]
    ids, positions, labels, weights = collate_packed(rows, [[0, 1, 2]], tok.pad_token_id)
    assert weights is None
    at = 0
    for row_ids, n_prompt, _ in rows:
        assert positions[0, at : at + len(row_ids)].tolist() == list(range(len(row_ids)))
        assert (labels[0, at : at + n_prompt] == -100).all()  # the prompt, the row's first token included
        assert labels[0, at + n_prompt : at + len(row_ids)].tolist() == row_ids[n_prompt:]
        at += len(row_ids)
    assert (labels[0] != -100).sum() == target_count(rows)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("weighted", [False, True])
def test_packed_loss_equals_unpacked_loss(arch, attn, weighted):
    tok = build_char_tokenizer()
    model = (_llama if arch == "llama" else _qwen2)(tok, attn)
    rows = _rows(tok, weighted)
    packs = pack_rows(rows, 128)
    assert len(packs) < len(rows) / 2 and any(len(p) >= 3 for p in packs)  # really packed, several per sequence
    plain = CompletionLoss(tok.pad_token_id)
    with torch.no_grad():
        unpacked = plain.loss_sum(model, rows, "cpu")
        packed = plain.packed(128).loss_sum(model, rows, "cpu")
        # Per-row attention: each row's logits inside a pack equal its logits alone.
        ids, positions, _, _ = collate_packed(rows, packs, tok.pad_token_id)
        inside = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        second = packs[0][1]
        start = len(rows[packs[0][0]][0])
        alone = model(input_ids=torch.tensor([rows[second][0]])).logits
    assert packed.item() == pytest.approx(unpacked.item(), rel=1e-4)
    assert torch.allclose(inside[0, start : start + len(rows[second][0])], alone[0], atol=1e-4)


def _train(**kw):
    tok = build_char_tokenizer()
    model = build_model(tok, ARCH, seed=0)
    checkpointing = kw.pop("gradient_checkpointing", False)
    params = TrainParams(epochs=1, lr=3e-3, batch_size=16, seed=3, **kw)
    log = train_sft(model, tok, PAIRS[:48], params, 64, log_every=1, precision="float32",
                    gradient_checkpointing=checkpointing)
    return model.state_dict(), log


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_micro_batches_and_packing_give_the_one_pass_update():
    whole, log = _train()
    initial = build_model(build_char_tokenizer(), ARCH, seed=0).state_dict()
    assert _max_diff(whole, initial) > 1e-3 and len(log) == 3
    for kw in ({"micro_batch_size": 1}, {"micro_batch_size": 2}, {"micro_batch_size": 16}, {"packing": True},
               {"packing": True, "micro_batch_size": 5}):
        other, other_log = _train(**kw)
        assert _max_diff(other, whole) < 1e-5, kw
        assert [e["loss"] for e in other_log] == pytest.approx([e["loss"] for e in log], rel=1e-5), kw


def test_gradient_checkpointing_changes_nothing():
    whole, log = _train()
    checkpointed, checkpointed_log = _train(gradient_checkpointing=True)
    assert all(torch.equal(whole[k], checkpointed[k]) for k in whole)
    assert checkpointed_log == log


def test_every_process_makes_the_same_number_of_micro_batches():
    batch = list(range(13))
    for processes in (1, 2, 3):
        for size in (1, 2, 4, None):
            groups = [micro_batches(process_slice(batch, r, processes), size, len(batch), processes)
                      for r in range(processes)]
            assert len({len(g) for g in groups}) == 1  # a sharded model gathers weights in every forward
            assert all(len(m) <= (size or len(batch)) for g in groups for m in g)
            assert [row for g in groups for m in g for row in m] == batch  # in order, each row once


TWO_PROCESS_SCRIPT = """
import sys, torch
from restem.schemas.params import Architecture, TrainParams
from restem.training.modeling import build_char_tokenizer, build_model
from restem.training.sft import is_main_process, train_sft
from restem.verifiers.arithmetic import scratchpad
torch.set_num_threads(1)
tok = build_char_tokenizer()
model = build_model(tok, Architecture(hidden_size=32, intermediate_size=64, layers=2, heads=2, max_positions=128), 0)
pairs = [(f"{a}+{b}=", scratchpad(a, b)) for a in range(0, 400, 37) for b in range(0, 90, 13)][:45]
micro = int(sys.argv[1]) or None
train_sft(model, tok, pairs, TrainParams(epochs=1, lr=3e-3, batch_size=15, seed=3, micro_batch_size=micro,
          packing=bool(int(sys.argv[2]))), 128, precision="float32")
if is_main_process():
    torch.save(model.state_dict(), sys.argv[3])
"""


@pytest.mark.slow
def test_micro_batches_compose_with_two_processes(tmp_path):
    """Two processes (slices of 7 and 8 rows of a 15-row batch), one row per forward and packing: every process
    makes 8 forwards (one of them empty), and the weights are those of one process in one pass."""
    import os
    import subprocess
    import sys

    from conftest import pythonpath
    from test_accelerate import _free_port

    script = tmp_path / "train.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": pythonpath(), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, str(script), "0", "0", str(tmp_path / "one.pt")], env=env, check=True,
                   timeout=300)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    proc = subprocess.run([*launch, str(script), "1", "1", str(tmp_path / "two.pt")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert _max_diff(one, two) < 1e-5
    assert not all(torch.equal(one[k], two[k]) for k in one)  # really two processes: float rounding differs


def test_the_reward_models_objective_refuses_packing():
    from restem.schemas.errors import RestemError
    from restem.training.reward import VerdictLoss
    from restem.training.sft import train_loop

    tok = build_char_tokenizer()
    rows = [(ids, n, 1.0) for ids, n, _ in _rows(tok)[:4]]
    with pytest.raises(RestemError, match="reward_model.train.packing"):
        train_loop(build_model(tok, ARCH, seed=0), rows, TrainParams(epochs=1, lr=1e-3, batch_size=2, packing=True),
                   VerdictLoss(tok.pad_token_id, 1.0))


@pytest.mark.parametrize("name, kind", [("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    from conftest import REPO

    config = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type == kind and config.mixed_precision == "no"  # restem's own autocast
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_reshard_after_forward"] is True  # full sharding
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    else:
        assert config.deepspeed_config["zero_stage"] == 3 and config.deepspeed_config["zero3_save_16bit_model"]


def test_the_new_keys_leave_recorded_params_unchanged_at_their_defaults():
    plain = TrainParams(epochs=1, lr=1e-3, batch_size=8)
    assert "micro_batch_size" not in plain.model_dump() and "packing" not in plain.model_dump_json()
    tuned = TrainParams(epochs=1, lr=1e-3, batch_size=8, micro_batch_size=2, packing=True)
    assert tuned.model_dump()["micro_batch_size"] == 2 and tuned.model_dump()["packing"] is True
