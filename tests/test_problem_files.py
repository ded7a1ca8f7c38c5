"""Problems from files keep everything (params: problems.files.format): a HumanEval file read by the problems
stage is graded by its own tests in Score; GSM8K references are the number after `####`; a table written by
`restem import problems` keeps meta and subset; bad rows name file, row and field; imported samples whose
problem ids match nothing are an error."""

from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import pytest

from conftest import TINY, real_data
from restem.publish.importers import import_problems, import_samples
from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows, write_rows
from restem.schemas.params import Params
from restem.schemas.tables import Problem, Sample, Score
from restem.stages import problems, score
from restem.workspace import iter_dir, problems_dir

HUMANEVAL, GSM8K = real_data("humaneval/HumanEval.jsonl.gz"), real_data("gsm8k/test.jsonl")
BROKEN = "    return None\n"  # every HumanEval check asserts a real value


def _params(files: dict, verifier: str) -> Params:
    raw = copy.deepcopy(TINY)
    raw["problems"] = {"source": "files", "seed": 0, "files": files}
    raw["base"]["checkpoint"] = "inputs/base/my-llm"  # no demonstrations needed
    raw["score"]["verifier"] = verifier
    return Params.model_validate(raw)


def _humaneval_slice(root: Path, n: int = 6) -> Path:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as f:
        lines = [line for line in f if line.strip()][:n]
    out = root / "inputs" / "problems" / "HumanEval.jsonl.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return out


def _samples(rows: list[dict]) -> list[Sample]:
    """For each problem its canonical solution (index 0) and a broken one (index 1)."""
    out = []
    for p in rows:
        for index, completion in enumerate((p["solution"], BROKEN)):
            out.append(Sample(sample_id=f"{p['problem_id']}-{index}", problem_id=p["problem_id"], iteration=1,
                              purpose="grow", policy="hand", engine="hand", sample_index=index, seed=0,
                              temperature=1.0, prompt=p["prompt"], completion=completion, finish_reason="stop",
                              prompt_tokens=0, completion_tokens=0))
    return out


@pytest.mark.parametrize("route", ["humaneval", "restem"])
def test_humaneval_file_through_problems_and_score_is_graded_by_its_tests(tmp_path, route):
    src = _humaneval_slice(tmp_path)
    if route == "restem":  # `restem import problems`, then the table as it is
        path = tmp_path / "inputs" / "problems" / "he.parquet"
        import_problems(src, "humaneval", path, split="test", subset="humaneval")
        files = {"train": "inputs/problems/he.parquet", "test": "inputs/problems/he.parquet", "format": "restem"}
    else:
        files = {"train": "inputs/problems/HumanEval.jsonl.gz", "test": "inputs/problems/HumanEval.jsonl.gz",
                 "format": "humaneval"}
    params = _params(files, "humaneval")
    assert problems.run(params, tmp_path) == {"demos": 0, "train": 6, "test": 6}
    train = read_rows(problems_dir(tmp_path) / "train.parquet", Problem)
    raw = [json.loads(line) for line in gzip.open(src, "rt")]
    by_prompt = {r["prompt"]: r for r in raw}
    for p in train:
        meta = json.loads(p["meta"])
        source = by_prompt[p["prompt"]]
        assert (meta["test"], meta["entry_point"], meta["task_id"]) == (
            source["test"], source["entry_point"], source["task_id"])
        assert p["split"] == "train" and p["solution"] == source["canonical_solution"]
        assert p["subset"] == ("humaneval" if route == "restem" else "train")
    write_rows(iter_dir(1, tmp_path) / "samples.parquet", Sample, _samples(train))
    score.run(params, 1, tmp_path)
    scores = read_rows(iter_dir(1, tmp_path) / "scores.parquet", Score)
    verdicts = {s["sample_id"]: s["verdict"] for s in scores}
    assert len(verdicts) == 12
    assert all(verdicts[f"{p['problem_id']}-0"] == "correct" for p in train), verdicts
    assert all(verdicts[f"{p['problem_id']}-1"] == "incorrect" for p in train), verdicts


def test_gsm8k_file_references_are_the_number_after_the_hashes(tmp_path):
    folder = tmp_path / "inputs" / "problems"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_bytes(GSM8K.read_bytes())
    params = _params({"train": "inputs/problems/test.jsonl", "test": "inputs/problems/test.jsonl",
                      "format": "gsm8k"}, "gsm8k")
    problems.run(params, tmp_path)
    got = {p["prompt"]: p for p in read_rows(problems_dir(tmp_path) / "test.parquet", Problem)}
    raw = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    assert len(got) == len(raw)
    for r in raw:
        number = r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert re.fullmatch(r"-?\d+(\.\d+)?", number)
        assert got[r["question"]]["reference"] == number
        assert got[r["question"]]["solution"] == r["answer"]


def test_columns_format_keeps_verifier_fields_and_hints_at_the_format(tmp_path):
    folder = tmp_path / "inputs" / "problems"
    folder.mkdir(parents=True)
    rows = [{"prompt": "def f():\n", "reference": "", "test": "def check(c):\n    assert c() == 1\n",
             "entry_point": "f", "other": 3}]
    (folder / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = _params({"train": "inputs/problems/code.jsonl", "test": "inputs/problems/code.jsonl"}, "humaneval")
    problems.run(params, tmp_path)
    meta = json.loads(read_rows(problems_dir(tmp_path) / "train.parquet", Problem)[0]["meta"])
    assert meta == {"entry_point": "f", "test": rows[0]["test"]}
    # A GSM8K file read as columns: the error names file, row and field, and the format to set.
    (folder / "gsm.jsonl").write_text(json.dumps({"question": "q", "answer": "x\n#### 4"}) + "\n")
    params = _params({"train": "inputs/problems/gsm.jsonl", "test": "inputs/problems/gsm.jsonl"}, "gsm8k")
    with pytest.raises(RestemError, match=r"gsm\.jsonl, row 1: field `prompt`.*problems\.files\.format: gsm8k"):
        problems.run(params, tmp_path)


@pytest.mark.parametrize("fmt, record, needle", [
    ("gsm8k", {"question": "q", "answer": "no hashes"}, r"bad\.jsonl: line 2: field `answer`"),
    ("humaneval", {"prompt": "def f():\n", "entry_point": "f"}, r"bad\.jsonl: line 2: field `test`"),
    ("restem", {"problem_id": "x", "prompt": "p", "reference": "1", "source": "s"},
     r"bad\.jsonl: row 1: field `subset`"),
])
def test_bad_rows_name_file_row_and_field(tmp_path, fmt, record, needle):
    folder = tmp_path / "inputs" / "problems"
    folder.mkdir(parents=True)
    good = {"gsm8k": {"question": "a", "answer": "#### 1"},
            "humaneval": {"prompt": "def g():\n", "test": "pass", "entry_point": "g"}}.get(fmt)
    lines = ([good] if good else []) + [record]
    (folder / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    params = _params({"train": "inputs/problems/bad.jsonl", "test": "inputs/problems/bad.jsonl", "format": fmt},
                     "exact")
    with pytest.raises(RestemError, match=needle):
        problems.run(params, tmp_path)
    assert not problems_dir(tmp_path).exists(), "no half-written output"


def test_restem_table_with_an_edited_prompt_is_an_error(tmp_path):
    path = tmp_path / "inputs" / "problems" / "t.parquet"
    import_problems(GSM8K, "gsm8k", path, split="train")
    rows = read_rows(path, Problem)
    rows[0] = {**rows[0], "prompt": rows[0]["prompt"] + " edited"}
    write_rows(path, Problem, [Problem(**r) for r in rows])
    params = _params({"train": "inputs/problems/t.parquet", "test": "inputs/problems/t.parquet",
                      "format": "restem"}, "gsm8k")
    with pytest.raises(RestemError, match=r"t\.parquet: row \d+: field `problem_id`"):
        problems.run(params, tmp_path)


def _solutions(path: Path, questions: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "ground_truth": f"#### {a}", "m": {"solution": f"#### {a}"}})
                            + "\n" for q, a in questions))
    return path


def test_import_samples_that_match_no_problem_is_an_error_and_some_a_warning(tmp_path, capsys):
    table = tmp_path / "p.parquet"
    problems_file = tmp_path / "g.jsonl"
    problems_file.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n"
                                     for i in range(4)))
    import_problems(problems_file, "gsm8k", table, template="Q: {prompt}\nA:")
    src = _solutions(tmp_path / "s.jsonl", [(f"q{i}", str(i)) for i in range(3)] + [("other", "9")])
    with pytest.raises(RestemError, match=r"none of the 4 problems .* different prompt template"):
        import_samples(src, tmp_path / "s.parquet", problems=table)
    assert not (tmp_path / "s.parquet").exists()
    stats = import_samples(src, tmp_path / "s.parquet", problems=table, template="Q: {prompt}\nA:")
    assert (stats["problems_matched"], stats["problems_unmatched"]) == (3, 1)
    assert "WARNING: 1 of 4 problems" in capsys.readouterr().err


def test_column_names_with_another_format_are_an_error():
    with pytest.raises(ValueError, match=r"prompt_field name columns of format `columns`"):
        _params({"train": "a.jsonl", "test": "b.jsonl", "format": "gsm8k", "prompt_field": "question"}, "gsm8k")
