"""Improve saves the checkpoint in the dtype it was stored in: a bfloat16 user checkpoint stays bfloat16 on disk
(half the bytes of float32), while training itself runs on float32 weights."""

import json
import shutil

import torch
from safetensors import safe_open

from restem.schemas.params import Params
from restem.stages import base, filter as filter_stage, grow, improve, score
from restem.training.modeling import load_policy, stored_dtype
from restem.workspace import model_dir


def _dtypes(folder):
    with safe_open(folder / "model.safetensors", "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}


def test_a_bfloat16_checkpoint_comes_back_bfloat16(tmp_path, tiny_raw, trained_root):
    trained, _ = trained_root
    root = tmp_path / "ws"
    checkpoint = root / "inputs" / "base" / "bf16-model"  # where DVC tracks a user's checkpoint (stage base's dep)
    model, tokenizer = load_policy(trained / "models" / "iter0")
    model.to(torch.bfloat16).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    assert stored_dtype(checkpoint) == "bfloat16" and stored_dtype(trained / "models" / "iter0") == "float32"

    shutil.copytree(trained / "data" / "problems", root / "data" / "problems")
    tiny_raw["base"]["checkpoint"] = str(checkpoint)
    params = Params.model_validate(tiny_raw)
    base.run(params, root)
    grow.run(params, 1, 0, root)
    score.run(params, 1, root)
    filter_stage.run(params, 1, root)
    improve.run(params, 1, 0, root)

    out = model_dir(1, root)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert _dtypes(out) == {"BF16"}
    f32 = (trained / "models" / "iter0" / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size < 0.55 * f32
    trained_model, _ = load_policy(out)  # it trained: the weights moved from the bfloat16 start
    start, _ = load_policy(checkpoint)
    assert any(not torch.equal(a, b) for a, b in zip(trained_model.state_dict().values(),
                                                    start.state_dict().values()))
