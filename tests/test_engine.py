"""The transformers engine: it really generates, greedy is greedy, and per-request seeds make a
sample independent of batch composition and order."""

import re

import pytest
import torch

from restem.sampling.engines import Request, SamplingParams, TransformersEngine, hash_uniform
from restem.training.modeling import load_policy
from restem.workspace import model_dir


def _engine(root, batch_size=64, noise="auto"):
    model, tok = load_policy(model_dir(0, root))
    return TransformersEngine(model, tok, batch_size=batch_size, noise=noise), model, tok


FORMAT = re.compile(r"^(\d\+\d\+\d=\d+,)*\d\+\d\+\d=\d+;\d+$")


def test_trained_base_generates_the_task_format_and_right_answers(trained_root):
    root, _ = trained_root
    engine, _, _ = _engine(root)
    pairs = [(a, b) for a in range(10, 99, 9) for b in range(11, 99, 13)]
    out = engine.generate([Request(f"{a}+{b}=", 0) for a, b in pairs], SamplingParams(0.0, 24))
    assert all(c.finish_reason == "eos" and FORMAT.match(c.text) for c in out), [c.text for c in out[:5]]
    right = sum(c.text.endswith(f";{a + b}") for c, (a, b) in zip(out, pairs))
    assert right >= 3, right  # chance is about zero
    assert out[0].prompt_tokens == 7 and out[0].completion_tokens == len(out[0].text) + 1  # + EOS
    # the sampled ids: the text's characters, then the EOS they ended on
    assert all(list(c.token_ids) == tok_ids(engine, c.text) + [engine.tokenizer.eos_token_id] for c in out)


def tok_ids(engine, text):
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_greedy_matches_plain_generate(trained_root):
    import torch

    root, _ = trained_root
    engine, model, tok = _engine(root)
    prompts = ["3+4=", "45+67=", "9+18="]
    ours = [c.text for c in engine.generate([Request(p, 0) for p in prompts], SamplingParams(0.0, 20))]
    for prompt, text in zip(prompts, ours):
        enc = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True) == text


@pytest.mark.parametrize("noise", ["generator", "hash"])
def test_samples_depend_on_seed_not_on_batch(trained_root, noise):
    root, _ = trained_root
    reqs = [Request(f"{i}+{i * 3 % 97}=", seed) for i in range(40) for seed in (11, 12)]
    sampling = SamplingParams(1.5, 20)
    a = _engine(root, batch_size=64, noise=noise)[0].generate(reqs, sampling)
    b = _engine(root, batch_size=7, noise=noise)[0].generate(list(reversed(reqs)), sampling)
    assert [c.text for c in a] == [c.text for c in reversed(b)]
    # different seeds on the same prompt give different samples somewhere
    assert any(a[2 * i].text != a[2 * i + 1].text for i in range(40))


def test_cpu_default_noise_is_the_per_request_generators(trained_root):
    """On the CPU, `auto` is the generator noise, which the committed pipeline outputs were made with."""
    root, _ = trained_root
    reqs = [Request(f"{i}+{i * 7 % 89}=", 100 + i) for i in range(30)]
    sampling = SamplingParams(1.5, 20)
    auto, generator, hashed = (_engine(root, noise=n)[0].generate(reqs, sampling) for n in ("auto", "generator", "hash"))
    assert [c.text for c in auto] == [c.text for c in generator]
    assert [c.text for c in auto] != [c.text for c in hashed]


M64 = (1 << 64) - 1
G, M1, M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(z):
    z ^= z >> 30
    z = (z * M1) & M64
    z ^= z >> 27
    z = (z * M2) & M64
    return z ^ (z >> 31)


def _reference_uniform(seed, step, vocab, j):
    """hash_uniform in plain Python integers, as its docstring defines it."""
    key = _mix((seed + G) & M64)
    z = _mix((key + (step * vocab + j) * G) & M64)
    return ((z >> 41) + 0.5) / 2**23


def test_hash_uniform_matches_its_definition():
    seeds = [0, 1, 12345, (1 << 63) - 1, 0x5DEECE66D1234567]
    for step in (0, 1, 39):
        u = hash_uniform(torch.tensor(seeds, dtype=torch.int64), step, 97)
        assert u.dtype == torch.float32 and u.shape == (len(seeds), 97)
        for i, seed in enumerate(seeds):
            for j in (0, 1, 50, 96):
                assert u[i, j].item() == _reference_uniform(seed, step, 97, j), (seed, step, j)


def test_hash_uniform_rows_are_their_seeds_alone_and_look_uniform():
    seeds = torch.arange(1000, dtype=torch.int64) * 7919 + 3
    u = hash_uniform(seeds, 5, 200)
    assert torch.equal(u[17:18], hash_uniform(seeds[17:18], 5, 200))  # no dependence on the other rows
    assert not torch.equal(u, hash_uniform(seeds, 6, 200))  # a new step, new noise
    assert 0.0 < u.min().item() and u.max().item() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    counts = torch.histc(u, bins=10, min=0.0, max=1.0)
    assert (counts - 20000).abs().max().item() < 800  # about 4.5 standard deviations
    lag = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1].item()
    assert abs(lag) < 0.01  # neighbouring tokens are not correlated
