"""On a CUDA machine: the transformers engine samples in bf16 on the GPU, and Improve trains there under
bf16 autocast. Every test skips on a CPU-only machine (run them with `python -m pytest -m gpu`)."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_engine_samples_in_bf16_on_the_gpu(trained_root, tmp_path):
    from schemas.io import read_rows
    from schemas.tables import Sample
    from stages import grow

    src, params = trained_root
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    engine = grow.make_engine("transformers", tmp_path / "models" / "iter0", 64, params.runtime)
    assert engine.model.device.type == "cuda" and engine.model.dtype == torch.bfloat16
    grow.run(params, 1, 0, tmp_path)
    rows = read_rows(tmp_path / "data" / "iter1" / "samples.parquet", Sample)
    assert len(rows) == 24 * params.grow.samples_per_problem
    assert sum(r["completion"].count(";") == 1 for r in rows) > len(rows) // 2  # the format survives bf16


def test_improve_trains_on_the_gpu_in_bf16(trained_root):
    from stages.modeling import load_policy
    from stages.training import _mixed_precision, train_sft

    root, params = trained_root
    assert _mixed_precision(params.runtime.precision) == "bf16"
    model, tokenizer = load_policy(root / "models" / "iter0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [(f"{a}+{b}=", f"{b % 10}+{a % 10}+0={a + b};{a + b}") for a in range(5) for b in range(5)]
    train = params.improve.model_copy(update={"epochs": 20, "lr": 3e-3})
    log = train_sft(model, tokenizer, pairs, train, 48)
    assert log[-1]["loss"] < log[0]["loss"]
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32; saved as such
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
