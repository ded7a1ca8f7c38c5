"""Bad input gets a clear error naming the file, row or field, a non-zero exit, and no output."""

import json
import subprocess
import sys

import pytest

from conftest import write_params, pythonpath
from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows, write_rows
from restem.schemas.params import Params
from restem.schemas.tables import Sample, Score
from restem.stages import filter as filter_stage, improve, problems
from restem.workspace import iter_dir


def _files_params(tiny_raw, tmp_path, train, test):
    tiny_raw["problems"] = {"source": "files", "seed": 0,
                            "files": {"train": str(train), "test": str(test)}}
    tiny_raw["base"]["checkpoint"] = str(tmp_path / "ckpt")
    return Params.model_validate(tiny_raw)


def _inputs(root):
    """inputs/problems/ of the workspace `root`: where params problems.files must point (a dep of stage problems)."""
    folder = root / "inputs" / "problems"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_missing_problem_file(tmp_path, tiny_raw):
    test = _jsonl(_inputs(tmp_path) / "test.jsonl", [{"prompt": "1+1=", "reference": "2"}])
    params = _files_params(tiny_raw, tmp_path, _inputs(tmp_path) / "nope.jsonl", test)
    with pytest.raises(RestemError, match=r"nope\.jsonl: problem file not found"):
        problems.run(params, tmp_path)
    assert not (tmp_path / "data").exists()


def test_malformed_json_line_is_named(tmp_path, tiny_raw):
    train = _inputs(tmp_path) / "train.jsonl"
    train.write_text('{"prompt": "1+1=", "reference": "2"}\n{"prompt": "2+2=", "reference": \n')
    test = _jsonl(_inputs(tmp_path) / "test.jsonl", [{"prompt": "1+2=", "reference": "3"}])
    with pytest.raises(RestemError, match=r"train\.jsonl: line 2 is not valid JSON"):
        problems.run(_files_params(tiny_raw, tmp_path, train, test), tmp_path)
    assert not (tmp_path / "data").exists()


def test_missing_field_names_row_and_field(tmp_path, tiny_raw):
    train = _jsonl(_inputs(tmp_path) / "train.jsonl", [{"prompt": "1+1=", "reference": "2"}, {"question": "2+2="}])
    test = _jsonl(_inputs(tmp_path) / "test.jsonl", [{"prompt": "1+2=", "reference": "3"}])
    with pytest.raises(RestemError, match=r"train\.jsonl, row 2: field `prompt`"):
        problems.run(_files_params(tiny_raw, tmp_path, train, test), tmp_path)


def test_user_files_with_field_mapping_and_parquet(tmp_path, tiny_raw):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": ["1+1=", "2+2="], "a": [2, 4]}), _inputs(tmp_path) / "train.parquet")
    test = _jsonl(_inputs(tmp_path) / "test.jsonl", [{"q": "1+2=", "a": "3", "level": 1}])
    params = _files_params(tiny_raw, tmp_path, _inputs(tmp_path) / "train.parquet", test)
    files = params.problems.files.model_copy(update={"prompt_field": "q", "reference_field": "a",
                                                    "difficulty_field": "level"})
    params = params.model_copy(update={"problems": params.problems.model_copy(update={"files": files})})
    counts = problems.run(params, tmp_path)
    assert counts == {"train": 2, "test": 1, "demos": 0}


def test_problem_file_outside_inputs_is_an_error(tmp_path, tiny_raw):
    train = _jsonl(tmp_path / "train.jsonl", [{"prompt": "1+1=", "reference": "2"}])
    params = _files_params(tiny_raw, tmp_path, train, _jsonl(_inputs(tmp_path) / "test.jsonl", []))
    with pytest.raises(RestemError, match=r"problems.files.train is .*train\.jsonl', outside inputs/problems/"):
        problems.run(params, tmp_path)
    assert not (tmp_path / "data").exists()


def test_files_without_demos_or_checkpoint_is_an_error(tmp_path, tiny_raw):
    train = _jsonl(_inputs(tmp_path) / "train.jsonl", [{"prompt": "1+1=", "reference": "2"}])
    params = _files_params(tiny_raw, tmp_path, train, train)
    params = params.model_copy(update={"base": params.base.model_copy(update={"checkpoint": None})})
    with pytest.raises(RestemError, match="needs demonstrations"):
        problems.run(params, tmp_path)


def _sample(i, completion="x;1"):
    return Sample(sample_id=f"s{i}", problem_id=f"p{i // 2}", iteration=1, purpose="grow", policy="m", engine="e",
                  sample_index=i % 2, seed=i, temperature=1.0, prompt="1+0=", completion=completion,
                  finish_reason="stop", prompt_tokens=4, completion_tokens=3)


def test_empty_kept_set_stops_filter_and_writes_nothing(tmp_path, tiny_params):
    folder = iter_dir(1, tmp_path)
    write_rows(folder / "samples.parquet", Sample, [_sample(i) for i in range(4)])
    write_rows(folder / "scores.parquet", Score, [
        Score(sample_id=f"s{i}", problem_id=f"p{i // 2}", iteration=1, verifier="v", reward=0.0, correct=False,
              verdict="incorrect", extracted="1", steps_valid=None) for i in range(4)])
    with pytest.raises(RestemError, match=r"filter@1: no sample was kept out of 4"):
        filter_stage.run(tiny_params, 1, tmp_path)
    assert not (folder / "kept.parquet").exists() and not (folder / "rejected.parquet").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["samples.parquet", "scores.parquet"]


def test_an_accumulating_iteration_may_keep_nothing_and_trains_on_what_came_before(tmp_path, tiny_raw, trained_root):
    import shutil

    from restem.schemas.tables import Kept, Rejected

    tiny_raw["loop"]["iterations"] = {"1": {"prev": 0, "init": 0}, "2": {"prev": 1, "init": 1, "accumulate": True}}
    params = Params.model_validate(tiny_raw)
    folder = iter_dir(2, tmp_path)
    write_rows(folder / "samples.parquet", Sample, [_sample(i).model_copy(update={"iteration": 2}) for i in range(4)])
    write_rows(folder / "scores.parquet", Score, [
        Score(sample_id=f"s{i}", problem_id=f"p{i // 2}", iteration=2, verifier="v", reward=0.0, correct=False,
              verdict="incorrect", extracted="1", steps_valid=None) for i in range(4)])
    counts = filter_stage.run(params, 2, tmp_path)
    assert counts["kept"] == 0 and counts["incorrect"] == 4
    assert read_rows(folder / "kept.parquet", Kept) == [] and len(read_rows(folder / "rejected.parquet", Rejected)) == 4
    assert json.loads((tmp_path / "metrics" / "filter" / "iter2.json").read_text())["kept"] == 0
    # Improve then trains on what iteration 1 trained on.
    root, _ = trained_root
    shutil.copytree(root / "models" / "iter0", tmp_path / "models" / "iter1")
    earlier = [Kept(sample_id=f"k{i}", problem_id=f"q{i}", iteration=1, prompt=f"{i}+1=", completion=f"{i + 1}",
                    reward=1.0, rule="correct") for i in range(3)]
    write_rows(iter_dir(1, tmp_path) / "train.parquet", Kept, earlier)
    assert improve.run(params, 2, 1, tmp_path)["rows"] == 3
    assert len(read_rows(folder / "train.parquet", Kept)) == 3


def test_improve_on_empty_kept_table_is_an_error(tmp_path, tiny_params, trained_root):
    import shutil

    from restem.schemas.tables import Kept

    root, _ = trained_root
    shutil.copytree(root / "models" / "iter0", tmp_path / "models" / "iter0")
    write_rows(iter_dir(1, tmp_path) / "kept.parquet", Kept, [])
    with pytest.raises(RestemError, match="kept set is empty"):
        improve.run(tiny_params, 1, 0, tmp_path)
    assert not (tmp_path / "models" / "iter1").exists()


def test_stage_cli_on_missing_input_exits_2(tmp_path, tiny_raw):
    params = write_params(tmp_path / "params.yaml", tiny_raw)
    proc = subprocess.run([sys.executable, "-m", "restem.stages.score", "--iteration", "1", "--params", str(params)],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": pythonpath(), "PATH": ""})
    assert proc.returncode == 2
    assert "samples.parquet: file not found" in proc.stderr and "Traceback" not in proc.stderr
