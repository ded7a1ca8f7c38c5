"""Improve with a LoRA adapter (improve.adapter: lora): the adapter folder is the iteration's model, a fresh adapter
on the base for init 0 and the previous adapter continued for a warm start, reproducible byte for byte; base +
adapter generates exactly what the merged checkpoint does; `restem export --model --merged` writes that
checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from restem.schemas.errors import RestemError
from restem.schemas.params import Params
from restem.stages import filter as filter_stage, grow, improve, score
from restem.workspace import model_dir

from conftest import TINY


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _lora_params(iterations: dict) -> Params:
    raw = json.loads(json.dumps(TINY))
    raw["base"]["train"]["epochs"] = 50  # the base of `trained_root`
    # steps, not epochs: the loss log needs several entries however many samples iteration 1 keeps
    raw["improve"].update({"steps": 24, "lr": 5e-3, "adapter": "lora", "lora": {"rank": 8, "alpha": 16}})
    raw["loop"]["iterations"] = iterations
    return Params.model_validate(raw)


def _grow_to_filter(params: Params, iteration: int, prev: int, root: Path) -> None:
    grow.run(params, iteration, prev, root)
    score.run(params, iteration, root)
    filter_stage.run(params, iteration, root)


def _lora_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory, trained_root):
    """Iteration 1 (fresh adapter on the base) and iteration 2 twice: fresh from the base (init 0, in `root`) and
    the warm start from iteration 1's adapter (init 1, in `warm`)."""
    src, _ = trained_root
    root = tmp_path_factory.mktemp("lora")
    for name in ("data", "models"):
        shutil.copytree(src / name, root / name)
    params = _lora_params({"1": {"prev": 0, "init": 0}, "2": {"prev": 1, "init": 0}})
    _grow_to_filter(params, 1, 0, root)
    improve.run(params, 1, 0, root)
    _grow_to_filter(params, 2, 1, root)
    warm = tmp_path_factory.mktemp("lora_warm")
    for name in ("data", "models"):
        shutil.copytree(root / name, warm / name)
    improve.run(params, 2, 0, root)
    warm_params = _lora_params({"1": {"prev": 0, "init": 0}, "2": {"prev": 1, "init": 1}})
    improve.run(warm_params, 2, 1, warm)
    return root, warm, params


def test_adapter_folder_is_the_model_and_names_its_base(lora_root):
    from restem.training.modeling import model_hash, read_meta, resolve_model

    root, _, params = lora_root
    folder = model_dir(1, root)
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "restem.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names and "README.md" not in names
    meta = read_meta(folder)
    assert meta.adapter.base == "models/iter0" and meta.adapter.base_hash == model_hash(model_dir(0, root))
    assert meta.parent == model_hash(model_dir(0, root))
    assert meta.params["improve"]["adapter"] == "lora" and meta.params["lora"]["rank"] == 8
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["base_model_name_or_path"] == "models/iter0"  # no machine path
    assert resolve_model(folder) == (model_dir(0, root), folder)
    with pytest.raises(RestemError, match="LoRA adapter"):
        from restem.training.modeling import resolve_checkpoint

        resolve_checkpoint(folder)
    full = _size(model_dir(0, root))
    print(f"\nTINY: adapter folder {_size(folder):,} bytes (weights "
          f"{(folder / 'adapter_model.safetensors').stat().st_size:,}), full checkpoint {full:,} bytes")


def test_lora_training_lowers_the_loss_and_changes_only_the_adapter(lora_root):
    from restem.training.adapters import fresh_adapter
    from restem.training.modeling import load_policy, read_meta

    root, _, params = lora_root
    log = read_meta(model_dir(1, root)).train_log
    assert len(log) >= 2 and log[-1]["loss"] < log[0]["loss"]
    trained = _lora_weights(model_dir(1, root))
    assert trained and all("lora_" in k for k in trained)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in trained.items())  # B starts at 0
    # The same fresh adapter, untrained: A as drawn from the seed, B zero; training moved both.
    from restem.schemas.hashing import derive_seed

    base, _ = load_policy(model_dir(0, root))
    fresh = fresh_adapter(base, params.improve.lora, derive_seed(params.improve.seed, "lora", 1) % (2**31))
    start = {k.replace(".default", ""): v for k, v in fresh.state_dict().items() if "lora_" in k}
    assert set(start) == set(trained)
    assert all(not start[k].equal(trained[k]) for k in trained)


def test_fresh_from_the_base_and_warm_start_continue_differently(lora_root):
    from restem.training.modeling import model_hash, read_meta

    root, warm, _ = lora_root
    first, fresh, cont = (_lora_weights(f) for f in (model_dir(1, root), model_dir(2, root), model_dir(2, warm)))
    assert read_meta(model_dir(2, root)).parent == model_hash(model_dir(0, root))
    assert read_meta(model_dir(2, warm)).parent == model_hash(model_dir(1, warm))
    # Both are adapters on the base; the warm start began at iteration 1's adapter, the fresh one at a new draw.
    assert read_meta(model_dir(2, warm)).adapter.base == "models/iter0"
    near = sum(float((cont[k] - first[k]).norm()) for k in first)
    far = sum(float((fresh[k] - first[k]).norm()) for k in first)
    assert near < far / 3, (near, far)


def test_lora_improve_rerun_is_byte_identical(lora_root):
    root, _, params = lora_root
    before = _bytes(model_dir(2, root))
    improve.run(params, 2, 0, root)
    assert _bytes(model_dir(2, root)) == before


def test_base_plus_adapter_generates_what_the_merged_checkpoint_does(lora_root, tmp_path):
    from restem.publish.model_export import export_model
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine
    from restem.schemas.io import read_rows
    from restem.schemas.tables import Problem
    from restem.training.modeling import load_policy, read_meta

    root, _, params = lora_root
    out = export_model(root, 2, tmp_path / "merged", merged=True)
    meta = read_meta(out)
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert meta.parent == read_meta(model_dir(2, root)).model_hash and meta.adapter is None
    assert meta.params["merged_from"]["adapter"] == "models/iter2"
    prompts = [r["prompt"] for r in read_rows(root / "data/problems/test.parquet", Problem)]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)

    def texts(model, tok):
        engine = TransformersEngine(model, tok, batch_size=64)
        return [c.text for c in engine.generate([Request(p, 0) for p in prompts], greedy)]

    unmerged = texts(*load_policy(model_dir(2, root), merge=False))  # PeftModel: base + adapter at every layer
    assert type(load_policy(model_dir(2, root), merge=False)[0]).__name__ == "PeftModelForCausalLM"
    merged = texts(*load_policy(out))
    assert unmerged == merged
    assert texts(*load_policy(model_dir(2, root))) == merged  # what Grow and Evaluate load
    base = texts(*load_policy(model_dir(0, root)))
    assert base != merged  # the adapter changed what the model writes
    # A second export gives the same bytes.
    again = export_model(root, 2, tmp_path / "merged2", merged=True)
    assert _bytes(again) == _bytes(out)


def test_a_changed_base_is_a_clear_error(lora_root, tmp_path):
    from restem.training.modeling import load_policy

    root, _, _ = lora_root
    copy = tmp_path / "ws"
    shutil.copytree(root / "models", copy / "models")
    meta = json.loads((copy / "models/iter0/restem.json").read_text())
    meta["model_hash"] = "0" * 16
    (copy / "models/iter0/restem.json").write_text(json.dumps(meta))
    with pytest.raises(RestemError, match="rerun `dvc repro`"):
        load_policy(copy / "models/iter1")
    moved = tmp_path / "elsewhere"
    shutil.copytree(root / "models/iter1", moved)
    with pytest.raises(RestemError, match="models/ folder"):
        load_policy(moved)


def test_warm_start_with_another_rank_is_a_clear_error(lora_root, tmp_path):
    root, _, _ = lora_root
    ws = tmp_path / "ws"
    for name in ("data", "models"):
        shutil.copytree(root / name, ws / name)
    params = _lora_params({"1": {"prev": 0, "init": 0}, "2": {"prev": 1, "init": 1}})
    params = params.model_copy(update={"improve": params.improve.model_copy(
        update={"lora": params.improve.lora.model_copy(update={"rank": 4})})})
    with pytest.raises(RestemError, match="improve.lora asks for rank 4"):
        improve.run(params, 2, 1, ws)


def test_full_fine_tuning_params_dump_is_unchanged(tiny_params):
    dumped = json.loads(tiny_params.improve.model_dump_json())
    assert "adapter" not in dumped and "lora" not in dumped
    lora = _lora_params({"1": {"prev": 0, "init": 0}})
    assert json.loads(lora.improve.model_dump_json())["adapter"] == "lora"
    with pytest.raises(Exception, match="adapter"):
        Params.model_validate({**json.loads(json.dumps(TINY)), "improve": {**TINY["improve"], "adapter": "qlora"}})


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory):
    """A small Qwen2ForCausalLM (about 7M parameters) with the character tokenizer, saved as a workspace's base."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from restem.training.modeling import build_char_tokenizer, save_policy

    tok = build_char_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    root = tmp_path_factory.mktemp("qwen2")
    save_policy(model, tok, model_dir(0, root), {"iteration": 0})
    return root


def test_qwen2_adapter_is_a_fraction_of_the_checkpoint(qwen2_folder):
    from restem.schemas.params import LoraParams
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine
    from restem.training.adapters import adapter_meta, fresh_adapter
    from restem.training.modeling import load_policy, save_policy

    root = qwen2_folder
    model, tok = load_policy(model_dir(0, root))
    peft_model = fresh_adapter(model, LoraParams(), 1)
    for name, weight in peft_model.named_parameters():  # stand-in for training: a non-zero update everywhere
        if "lora_B" in name:
            weight.data.normal_(0, 0.02, generator=__import__("torch").Generator().manual_seed(len(name)))
    save_policy(peft_model, tok, model_dir(1, root), {"iteration": 1, "adapter": adapter_meta(model_dir(0, root), root)})
    adapter, full = _size(model_dir(1, root)), _size(model_dir(0, root))
    print(f"\nQwen2 ({sum(p.numel() for p in model.parameters()):,} params): adapter folder {adapter:,} bytes, "
          f"full checkpoint {full:,} bytes ({adapter / full:.1%})")
    assert adapter < full / 3
    prompts = ["12+34=", "7+8=", "100+1=", "5+5="]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    outs = []
    for merge in (False, True):
        m, t = load_policy(model_dir(1, root), merge=merge)
        outs.append([c.text for c in TransformersEngine(m, t).generate([Request(p, 0) for p in prompts], greedy)])
    assert outs[0] == outs[1]


def test_export_command_writes_the_merged_model(lora_root, tmp_path):
    from typer.testing import CliRunner

    from restem.cli.main import app
    from restem.training.modeling import load_policy

    root, _, _ = lora_root
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", "--model", "1", "--merged", "-o", str(out), "--root", str(root)])
    assert result.exit_code == 0, result.output
    model, _ = load_policy(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    again = CliRunner().invoke(app, ["export", "--model", "1", "--merged", "-o", str(out), "--root", str(root)])
    assert again.exit_code == 2 and "not empty" in again.output
    bare = CliRunner().invoke(app, ["export", "--merged", "-o", str(tmp_path / "x"), "--root", str(root)])
    assert bare.exit_code == 2 and "--merged needs --model" in bare.output
    copied = tmp_path / "adapter"
    plain = CliRunner().invoke(app, ["export", "--model", "1", "-o", str(copied), "--root", str(root)])
    assert plain.exit_code == 0 and (copied / "adapter_config.json").is_file()


def test_same_bytes_in_another_workspace_and_full_fine_tuning_from_an_adapter(lora_root, tmp_path):
    """DVC runs stages in copies of the workspace: nothing in the adapter folder depends on where it was written.
    And with adapter none, a warm start from an adapter model fine-tunes the merged weights into a full checkpoint."""
    from restem.training.modeling import model_hash, read_meta

    root, _, params = lora_root
    other = tmp_path / "elsewhere"
    for name in ("data", "models"):
        shutil.copytree(root / name, other / name)
    improve.run(params, 1, 0, other)
    assert _bytes(model_dir(1, other)) == _bytes(model_dir(1, root))
    full = params.model_copy(update={"improve": params.improve.model_copy(update={"adapter": "none"})})
    improve.run(full, 2, 1, other)
    assert (model_dir(2, other) / "model.safetensors").is_file() and not (model_dir(2, other) / "adapter_config.json").exists()
    assert read_meta(model_dir(2, other)).parent == model_hash(model_dir(1, other))
    assert read_meta(model_dir(2, other)).adapter is None


_SAVE_FRESH = """
import sys
from pathlib import Path
from restem.schemas.params import LoraParams
from restem.training.adapters import adapter_meta, fresh_adapter
from restem.training.modeling import load_policy, save_policy
root, out = Path(sys.argv[1]), Path(sys.argv[2])
model, tok = load_policy(root / "models/iter0")
save_policy(fresh_adapter(model, LoraParams(), 3), tok, out, {"iteration": 1, "adapter": adapter_meta(root / "models/iter0", root)})
"""


def test_adapter_files_do_not_depend_on_the_process(lora_root, tmp_path):
    """peft keeps target modules in a set, whose order follows the process's hash seed; the saved files must not."""
    import os
    import subprocess
    import sys

    from conftest import pythonpath

    root, _, _ = lora_root
    outs = []
    for seed in ("1", "2"):
        out = root / "models" / f"fresh{seed}"
        env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", _SAVE_FRESH, str(root), str(out)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs.append(_bytes(out))
        shutil.rmtree(out)
    assert outs[0] == outs[1]


def test_adapter_on_the_users_own_checkpoint(lora_root, tmp_path):
    """base.checkpoint: models/iter0 is a restem.json pointing to the user's folder; the adapter names models/iter0
    and loads (and merges) on the user's weights."""
    from restem.publish.model_export import export_model
    from restem.training.modeling import link_checkpoint, load_policy, read_meta, resolve_model

    root, _, params = lora_root
    users = tmp_path / "my-checkpoint"
    shutil.copytree(model_dir(0, root), users)
    (users / "restem.json").unlink()
    ws = tmp_path / "ws"
    shutil.copytree(root / "data", ws / "data")
    link_checkpoint(users, model_dir(0, ws), "base.checkpoint")
    improve.run(params, 1, 0, ws)
    assert read_meta(model_dir(1, ws)).adapter.base == "models/iter0"
    assert resolve_model(model_dir(1, ws)) == (users.resolve(), model_dir(1, ws))
    merged = export_model(ws, 1, tmp_path / "merged", merged=True)
    a, b = load_policy(model_dir(1, ws))[0], load_policy(merged)[0]
    assert all(x.equal(y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
