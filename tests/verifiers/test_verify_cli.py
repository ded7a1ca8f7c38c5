"""`restem verify`: run() on small files for each verifier, malformed input errors, no output left."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from restem.schemas.errors import RestemError
from restem.cli.verify import run, verify_command


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _verdicts(path: Path) -> dict[str, str]:
    table = pq.read_table(path)
    return dict(zip(table.column("id").to_pylist(), table.column("verdict").to_pylist()))


MATH_ROWS = [
    {"id": "a", "completion": "so \\boxed{\\frac{1}{2}}", "reference": "0.5"},
    {"id": "b", "completion": "\\boxed{(2,1)}", "reference": "(1,2)"},
    {"id": "c", "completion": "no answer", "reference": "3"},
]
GSM8K_ROWS = [
    {"id": "x", "completion": "3 + 4 = 7\n#### 7", "reference": "7"},
    {"id": "y", "completion": "A: 1,000", "reference": "Some steps\n#### 1000"},
    {"id": "z", "completion": "A: 8", "reference": "7"},
]
HUMANEVAL_ROWS = [
    {"id": "ok", "prompt": "def inc(x):\n", "completion": "    return x + 1\n",
     "test": "def check(f):\n    assert f(1) == 2\n", "entry_point": "inc"},
    {"id": "bad", "prompt": "def inc(x):\n", "completion": "    return x\n",
     "test": "def check(f):\n    assert f(1) == 2\n", "entry_point": "inc"},
]
APPS_ROWS = [
    {"id": "s", "completion": "print(int(input()) * 2)", "input_output": json.dumps({"inputs": ["4\n"], "outputs": ["8\n"]})},
    {"id": "t", "completion": "def f(a):\n    return a * 3\n", "fn_name": "f",
     "input_output": json.dumps({"inputs": [[2]], "outputs": [[6]]})},
    {"id": "u", "completion": "print(0)", "input_output": json.dumps({"inputs": ["4\n"], "outputs": ["8\n"]})},
]


@pytest.mark.parametrize("verifier, rows, expected", [
    ("math", MATH_ROWS, {"a": "correct", "b": "incorrect", "c": "incorrect"}),
    ("gsm8k", GSM8K_ROWS, {"x": "correct", "y": "correct", "z": "incorrect"}),
    ("humaneval", HUMANEVAL_ROWS, {"ok": "correct", "bad": "incorrect"}),
    ("apps", APPS_ROWS, {"s": "correct", "t": "correct", "u": "incorrect"}),
])
def test_run_grades_each_verifier(tmp_path, verifier, rows, expected):
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"
    stats = run(verifier, src, out, workers=2, timeout_s=10)
    assert _verdicts(out) == expected
    assert stats["rows"] == len(rows) and stats["correct"] == sum(v == "correct" for v in expected.values())
    table = pq.read_table(out)
    assert {"id", "verdict", "correct", "reward", "extracted", "details"} <= set(table.schema.names)
    assert all(isinstance(json.loads(d), dict) for d in table.column("details").to_pylist())


def test_output_bytes_are_identical_on_rerun_and_parquet_input_works(tmp_path):
    src = _write_jsonl(tmp_path / "in.jsonl", GSM8K_ROWS)
    run("gsm8k", src, tmp_path / "one.parquet", workers=2, timeout_s=10)
    run("gsm8k", src, tmp_path / "two.parquet", workers=1, timeout_s=10)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    pq.write_table(pa.Table.from_pylist(GSM8K_ROWS), tmp_path / "in.parquet")
    run("gsm8k", tmp_path / "in.parquet", tmp_path / "three.parquet", workers=1, timeout_s=10)
    assert _verdicts(tmp_path / "three.parquet") == _verdicts(tmp_path / "one.parquet")


@pytest.mark.parametrize("content, needle", [
    ('{"id": "a", "completion": "x", "reference": "1"}\n{"id": "b", "completion": \n', "line 2 is not valid JSON"),
    ('{"id": "a", "completion": "x"}\n', "line 1: field `reference` is missing"),
    ('{"id": "a", "completion": "x", "reference": "1"}\n\n[1, 2]\n', "line 3 is a list"),
    ('{"id": "a", "completion": 5, "reference": "1"}\n', "line 1: field `completion` is a int"),
    ('{"id": "a", "completion": "x", "reference": "1"}\n{"id": "a", "completion": "y", "reference": "1"}\n',
     "line 2: id 'a' already used on line 1"),
])
def test_malformed_input_names_the_line_and_writes_nothing(tmp_path, content, needle):
    src = tmp_path / "bad.jsonl"
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "out.parquet"
    with pytest.raises(RestemError) as err:
        run("gsm8k", src, out, workers=1, timeout_s=5)
    assert needle in str(err.value) and str(src) in str(err.value)
    assert list(tmp_path.iterdir()) == [src], "no output or temp file is left"


def test_apps_bad_input_output_and_unknown_verifier(tmp_path):
    src = _write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "completion": "x", "input_output": "{oops"}])
    with pytest.raises(RestemError, match="line 1: field `input_output` is not valid JSON"):
        run("apps", src, tmp_path / "o.parquet", workers=1, timeout_s=5)
    with pytest.raises(RestemError, match="unknown verifier 'nope'"):
        run("nope", src, tmp_path / "o.parquet", workers=1, timeout_s=5)
    assert not (tmp_path / "o.parquet").exists()


def test_command_exits_non_zero_on_bad_input(tmp_path):
    app = typer.Typer()
    app.command("verify")(verify_command)
    app.command("noop")(lambda: None)  # two commands, so `verify` is addressed by name as in `restem`
    src = tmp_path / "bad.jsonl"
    src.write_text("not json\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["verify", "gsm8k", "--input", str(src), "--output", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2
    assert "line 1 is not valid JSON" in result.output
    good = _write_jsonl(tmp_path / "good.jsonl", GSM8K_ROWS)
    result = CliRunner().invoke(app, ["verify", "gsm8k", "--input", str(good), "--output", str(tmp_path / "o.parquet")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["correct"] == 2


def test_extraction_option_reaches_the_grader_and_is_checked(tmp_path):
    app = typer.Typer()
    app.command("verify")(verify_command)
    app.command("noop")(lambda: None)
    rows = [{"id": "p", "completion": "So the probability that Alice wins is 2/3.", "reference": "2/3"},
            {"id": "h", "completion": "#### 20=5", "reference": "5"}]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    for mode, expected in (("strict", {"p": "incorrect", "h": "incorrect"}),
                           ("lenient", {"p": "correct", "h": "incorrect"})):
        out = tmp_path / f"{mode}.parquet"
        result = CliRunner().invoke(app, ["verify", "math", "-i", str(src), "-o", str(out), "--workers", "1",
                                          "--extraction", mode])
        assert result.exit_code == 0, result.output
        assert _verdicts(out) == expected
        details = [json.loads(d) for d in pq.read_table(out).column("details").to_pylist()]
        assert {d["extraction"] for d in details} == {mode}
    run("gsm8k", src, tmp_path / "default.parquet", workers=1, timeout_s=10)
    assert _verdicts(tmp_path / "default.parquet") == {"p": "incorrect", "h": "incorrect"}  # strict by default
    with pytest.raises(RestemError, match="--extraction must be one of"):
        run("math", src, tmp_path / "x.parquet", workers=1, timeout_s=5, extraction="loose")
    with pytest.raises(RestemError, match="applies to"):
        run("humaneval", src, tmp_path / "x.parquet", workers=1, timeout_s=5, extraction="strict")
    assert not (tmp_path / "x.parquet").exists()
