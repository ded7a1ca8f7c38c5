"""On a CUDA machine: the transformers engine samples in bf16 on the GPU, and Improve trains there under
bf16 autocast. Every test skips on a CPU-only machine (run them with `python -m pytest -m gpu`)."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_engine_samples_in_bf16_on_the_gpu(trained_root, tmp_path):
    from restem.schemas.io import read_rows
    from restem.schemas.tables import Sample
    from restem.sampling import sampler
    from restem.stages import grow

    src, params = trained_root
    params = params.model_copy(update={"runtime": params.runtime.model_copy(update={"precision": "auto"})})
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    engine = sampler.make_engine("transformers", tmp_path / "models" / "iter0", 64, params.runtime)
    assert engine.model.device.type == "cuda" and engine.model.dtype == torch.bfloat16
    grow.run(params, 1, 0, tmp_path)
    rows = read_rows(tmp_path / "data" / "iter1" / "samples.parquet", Sample)
    assert len(rows) == 24 * params.grow.samples_per_problem
    assert sum(r["completion"].count(";") == 1 for r in rows) > len(rows) // 2  # the format survives bf16
    # the same params and seeds give the same bytes on the GPU too (Gumbel noise hashed on the device)
    first = (tmp_path / "data" / "iter1" / "samples.parquet").read_bytes()
    shutil.rmtree(tmp_path / "data" / "iter1")
    grow.run(params, 1, 0, tmp_path)
    assert (tmp_path / "data" / "iter1" / "samples.parquet").read_bytes() == first


def test_hashed_noise_has_the_same_bits_on_the_gpu_as_on_the_cpu():
    from restem.sampling.engines import hash_uniform

    seeds = torch.tensor([0, 7, 2**62 + 12345, 2**63 - 1] + list(range(1000, 1252)), dtype=torch.int64)
    for step in (0, 3, 63):
        assert torch.equal(hash_uniform(seeds, step, 151936).cpu(), hash_uniform(seeds.cuda(), step, 151936).cpu())


def test_gpu_samples_depend_on_seed_not_on_batch(trained_root):
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine, _GumbelSampler
    from restem.training.modeling import load_policy

    root, _ = trained_root
    model, tok = load_policy(root / "models" / "iter0", "bfloat16")
    reqs = [Request(f"{i}+{i * 3 % 97}=", seed) for i in range(40) for seed in (11, 12)]
    sampling = SamplingParams(1.5, 20)
    a = TransformersEngine(model.cuda(), tok, batch_size=64).generate(reqs, sampling)
    b = TransformersEngine(model, tok, batch_size=7).generate(list(reversed(reqs)), sampling)
    assert [c.text for c in a] == [c.text for c in reversed(b)]
    assert any(a[2 * i].text != a[2 * i + 1].text for i in range(40))
    # on the GPU, `auto` noise is the hash, drawn there
    from restem.sampling.engines import hash_uniform

    noise = _GumbelSampler([1, 2], sampling)._uniform(5, torch.device("cuda"))
    assert noise.device.type == "cuda" and torch.equal(noise, hash_uniform(torch.tensor([1, 2]).cuda(), 0, 5))


def test_improve_trains_on_the_gpu_in_bf16(trained_root):
    from restem.training.modeling import load_policy
    from restem.training.sft import _mixed_precision, train_sft

    root, params = trained_root
    assert _mixed_precision("auto") == "bf16" and _mixed_precision("float32") == "no"
    model, tokenizer = load_policy(root / "models" / "iter0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [(f"{a}+{b}=", f"{b % 10}+{a % 10}+0={a + b};{a + b}") for a in range(5) for b in range(5)]
    train = params.improve.model_copy(update={"epochs": 20, "lr": 3e-3})
    log = train_sft(model, tokenizer, pairs, train, 48, precision="auto")
    assert log[-1]["loss"] < log[0]["loss"]
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32; saved as such
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_float32_then_bf16_training_in_one_process(trained_root):
    """A float32 run (base, say) and then a bf16 run (Improve) in one process: Accelerate's process-wide
    state once refused the second."""
    from restem.training.modeling import load_policy
    from restem.training.sft import train_sft

    root, params = trained_root
    pairs = [(f"{a}+{b}=", f"{b % 10}+{a % 10}+0={a + b};{a + b}") for a in range(5) for b in range(5)]
    for precision in ("float32", "auto"):
        model, tokenizer = load_policy(root / "models" / "iter0")
        log = train_sft(model, tokenizer, pairs, params.improve.model_copy(update={"epochs": 4, "lr": 3e-3}), 48,
                        log_every=1, precision=precision)
        assert log[-1]["loss"] < log[0]["loss"]
