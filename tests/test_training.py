"""SFT really trains: the loss falls, the parameters change, only completion tokens are learned,
and the same seed gives the same weights."""

import torch

from restem.schemas.params import Architecture, TrainParams
from restem.training.modeling import build_char_tokenizer, build_model
from restem.training.sft import _collate, encode_pairs, train_sft
from restem.verifiers.arithmetic import scratchpad

ARCH = Architecture(hidden_size=32, intermediate_size=64, layers=2, heads=2, max_positions=48)
PAIRS = [(f"{a}+{b}=", scratchpad(a, b)) for a in range(0, 50, 3) for b in range(0, 50, 7)]


def _train(seed=0, epochs=4.0):
    tok = build_char_tokenizer()
    model = build_model(tok, ARCH, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = train_sft(model, tok, PAIRS, TrainParams(epochs=epochs, lr=3e-3, batch_size=16, seed=seed), 48,
                    log_every=5)
    return model, before, log


def test_loss_falls_and_parameters_change():
    model, before, log = _train(epochs=12)
    assert log[-1]["loss"] < 0.6 * log[0]["loss"], log
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)


def test_same_seed_same_weights_other_seed_other_weights():
    a, _, _ = _train(seed=0, epochs=1)
    b, _, _ = _train(seed=0, epochs=1)
    c, _, _ = _train(seed=1, epochs=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_loss_is_on_completion_tokens_only():
    tok = build_char_tokenizer()
    enc = encode_pairs(tok, [("12+3=", "2+3+0=5,1+0+0=1;15")], 48)
    ids, n_prompt = enc[0]
    assert tok.decode(ids[:n_prompt]) == "<s>12+3="
    assert ids[-1] == tok.eos_token_id
    _, mask, labels = _collate(enc + [(ids[:4], 2)], tok.pad_token_id)
    assert (labels[0, :n_prompt] == -100).all() and (labels[0, n_prompt:] != -100).all()
    assert (labels[1, 4:] == -100).all() and mask[1, 4:].sum() == 0


def test_loss_target_stops_at_the_first_epoch_below_it_on_the_same_schedule():
    tok = build_char_tokenizer()
    steps_per_epoch = -(-len(PAIRS) // 16)

    def run(target):
        model = build_model(tok, ARCH, seed=0)
        params = TrainParams(epochs=8, lr=3e-3, batch_size=16, seed=0, loss_target=target)
        return train_sft(model, tok, PAIRS, params, 48, log_every=1)

    full = run(None)
    assert len(full) == 8 * steps_per_epoch and "stop" not in full[-1]
    means = [sum(e["loss"] for e in full[i * steps_per_epoch:(i + 1) * steps_per_epoch]) / steps_per_epoch
             for i in range(8)]
    target = means[4] + 1e-4  # reached at epoch 5 at the latest
    first = next(i for i, m in enumerate(means) if m < target) + 1
    assert 1 < first <= 5, means
    stopped = run(target)
    assert len(stopped) == first * steps_per_epoch
    assert stopped[-1]["stop"] == "loss_target" and stopped[-1]["epoch"] == first
    assert abs(stopped[-1]["epoch_loss"] - means[first - 1]) < 1e-5
    # the schedule is the cap's: the same steps, losses and learning rates as the full run up to the stop
    assert [(e["loss"], e["lr"]) for e in stopped] == [(e["loss"], e["lr"]) for e in full[:len(stopped)]]
