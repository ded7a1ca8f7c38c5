"""The user's own problem files and checkpoints are DVC deps tracked by content (inputs/<stage>/, see
inputs/README.md): replacing a file makes the stage that reads it out of date, and a path outside its folder is
an error naming the param and the fix. Runs `dvc` on a workspace whose base is a user's checkpoint, so no model
is trained (stage base only records the checkpoint and its hash)."""

import json

import pytest
import yaml

from conftest import TINY, copy_project, write_params
from restem.schemas.errors import RestemError
from restem.schemas.params import Params
from restem.stages import base
from test_pipeline_dvc import _run, _stages_run


def _checkpoint(folder, weights: bytes):
    """A folder that passes for a Hugging Face checkpoint as far as stage base looks (config.json + weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(weights)


def _jsonl(path, pairs):
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "reference": a + b}) + "\n" for a, b in pairs))


def _raw():
    raw = json.loads(json.dumps(TINY))
    raw["problems"] = {"source": "files", "seed": 0, "files": {
        "train": "inputs/problems/train.jsonl", "test": "inputs/problems/test.jsonl"}}
    raw["base"]["checkpoint"] = "inputs/base/my-llm"
    raw["score"]["verifier"] = "exact"
    return raw


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("inputs"))
    _jsonl(root / "inputs/problems/train.jsonl", [(a, 7) for a in range(10, 30)])
    _jsonl(root / "inputs/problems/test.jsonl", [(a, 9) for a in range(10, 20)])
    _checkpoint(root / "inputs/base/my-llm", b"weights one")
    write_params(root / "params.yaml", _raw())
    _run(["git", "init", "-q"], root)
    _run(["dvc", "init", "-q"], root)
    _run(["dvc", "config", "core.analytics", "false"], root)
    assert _stages_run(_run(["dvc", "repro", "base"], root).stdout) == ["problems", "base"]
    assert "up to date" in _run(["dvc", "status", "base"], root).stdout
    return root


def _lock_out(root, stage: str, path: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"][stage]
    return next(o["md5"] for o in lock["outs"] if o["path"] == path)


def test_replacing_a_problem_file_makes_problems_out_of_date(workspace):
    before = _lock_out(workspace, "problems", "data/problems")
    _jsonl(workspace / "inputs/problems/train.jsonl", [(a, 8) for a in range(10, 30)])  # same path, new content
    status = _run(["dvc", "status", "problems"], workspace).stdout
    assert "problems:" in status and "modified:" in status and "inputs/problems" in status, status
    assert _stages_run(_run(["dvc", "repro", "base"], workspace).stdout) == ["problems"]  # no demos: base stands
    assert _lock_out(workspace, "problems", "data/problems") != before


def test_replacing_the_checkpoint_weights_reruns_base(workspace):
    meta = lambda: json.loads((workspace / "models/iter0/restem.json").read_text())  # noqa: E731
    before, lock_before = meta()["model_hash"], _lock_out(workspace, "base", "models/iter0")
    (workspace / "inputs/base/my-llm/model.safetensors").unlink()  # a file replaced, as a user would
    _checkpoint(workspace / "inputs/base/my-llm", b"weights two")
    status = _run(["dvc", "status", "base"], workspace).stdout
    assert "base:" in status and "inputs/base" in status, status
    assert _stages_run(_run(["dvc", "repro", "base"], workspace).stdout) == ["base"]
    assert meta()["model_hash"] != before and _lock_out(workspace, "base", "models/iter0") != lock_before
    assert "up to date" in _run(["dvc", "status", "base"], workspace).stdout


@pytest.mark.parametrize("section, field", [("base", "checkpoint"), ("reward_model", "checkpoint")])
def test_a_checkpoint_outside_its_inputs_folder_is_an_error(tmp_path, section, field):
    _checkpoint(tmp_path / "elsewhere", b"w")
    raw = _raw()
    raw[section][field] = str(tmp_path / "elsewhere")
    if section == "reward_model":
        raw["score"]["reward"] = "model"
    params = Params.model_validate(raw)
    with pytest.raises(RestemError, match=rf"{section}.{field} is .*elsewhere', outside inputs/{section}/.*cp -al"):
        if section == "base":
            base.run(params, tmp_path)
        else:
            from restem.stages import reward_model

            reward_model.run(params, tmp_path)
    assert not (tmp_path / "models").exists()


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    """DVC does not follow a linked folder, so a symlinked checkpoint would not be tracked by content."""
    _checkpoint(tmp_path / "elsewhere", b"w")
    (tmp_path / "inputs/base").mkdir(parents=True)
    (tmp_path / "inputs/base/my-llm").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RestemError, match="a symbolic link does not work"):
        base.run(Params.model_validate(_raw()), tmp_path)


def test_import_problems_writes_into_the_tracked_folder(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from restem.cli.main import app

    src = tmp_path / "gsm8k.jsonl"
    src.write_text(json.dumps({"question": "What is 2+3?", "answer": "2+3=5\n#### 5"}) + "\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["import", "problems", "--input", str(src), "--format", "gsm8k"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "inputs/problems/train.parquet").is_file()
