"""params.yaml: the committed file is valid; typos, wrong types and bad loops fail loudly."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from conftest import REPO, write_params, pythonpath
from restem.schemas.errors import RestemError
from restem.schemas.params import Params, load_params


def test_committed_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert params.loop.iterations["1"].prev == 0
    assert params.problems.source == "arithmetic"


def test_typo_names_the_key(tmp_path, tiny_raw):
    tiny_raw["grow"]["tempreture"] = 0.7
    with pytest.raises(RestemError, match=r"grow\.tempreture: unknown key"):
        load_params(write_params(tmp_path / "p.yaml", tiny_raw))


def test_a_key_given_twice_is_an_error(tmp_path):
    """Plain YAML keeps the last of two equal keys silently; params name both lines instead."""
    text = (REPO / "params.yaml").read_text().replace("\nimprove:", "\nimprove:\n  adapter: lora", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(RestemError, match="key 'adapter' appears twice"):
        load_params(path)


def test_wrong_type_names_the_key_and_value(tmp_path, tiny_raw):
    tiny_raw["grow"]["samples_per_problem"] = "many"
    with pytest.raises(RestemError, match=r"grow\.samples_per_problem: .*'many'"):
        load_params(write_params(tmp_path / "p.yaml", tiny_raw))


def test_missing_section(tmp_path, tiny_raw):
    del tiny_raw["filter"]
    with pytest.raises(RestemError, match=r"filter: required key is missing"):
        load_params(write_params(tmp_path / "p.yaml", tiny_raw))


@pytest.mark.parametrize(
    "iterations, message",
    [
        ({"1": {"prev": 1, "init": 0}}, "must be an earlier iteration or step"),
        ({"1": {"prev": 0, "init": 0}, "3": {"prev": 2, "init": 0}}, "names no iteration or step"),
        ({"x": {"prev": 0, "init": 0}}, "quoted positive integer"),
    ],
)
def test_loop_must_be_a_chain(tiny_raw, iterations, message):
    tiny_raw["loop"]["iterations"] = iterations
    with pytest.raises(ValidationError, match=message):
        Params.model_validate(tiny_raw)


def test_cross_field_checks(tiny_raw):
    tiny_raw["base"]["model"]["heads"] = 3
    with pytest.raises(ValidationError, match="divisible by heads"):
        Params.model_validate(tiny_raw)
    tiny_raw["base"]["model"]["heads"] = 2
    tiny_raw["problems"]["arithmetic"]["demo_digits"] = {"low": 3, "high": 1}
    with pytest.raises(ValidationError, match="must not exceed"):
        Params.model_validate(tiny_raw)


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("grow: [unclosed\n")
    with pytest.raises(RestemError, match="p.yaml: not valid YAML"):
        load_params(bad)


def test_stage_cli_exits_nonzero_with_message_and_writes_nothing(tmp_path, tiny_raw):
    tiny_raw["problems"]["sede"] = 1
    params = write_params(tmp_path / "params.yaml", tiny_raw)
    proc = subprocess.run([sys.executable, "-m", "restem.stages.problems", "--params", str(params)], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": pythonpath(), "PATH": ""})
    assert proc.returncode == 2
    assert "problems.sede: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


def test_replay_without_demonstrations_fails_before_any_stage_runs(tmp_path):
    """The committed default replays demonstrations (improve.replay 0.25); a user's own files without demos get a
    clear error when params load, naming both keys and the fix, instead of one from Improve after Grow's hours."""
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert raw["improve"]["replay"] > 0
    raw["problems"] = {"source": "files", "seed": 0, "files": {"train": "train.jsonl", "test": "test.jsonl"}}
    with pytest.raises(RestemError, match=r"improve\.replay is 0\.25 but problems\.files\.demos is not set.*"
                                          r"set improve\.replay: 0"):
        load_params(write_params(tmp_path / "p.yaml", raw))
    raw["improve"]["replay"] = 0.0
    assert load_params(write_params(tmp_path / "p.yaml", raw)).improve.replay == 0.0
    raw["improve"]["replay"], raw["problems"]["files"]["demos"] = 0.25, "demos.jsonl"
    assert load_params(write_params(tmp_path / "p.yaml", raw)).improve.replay == 0.25
