"""`restem import`: public problem files and external completions become Problem and Sample tables."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows
from restem.schemas.tables import Problem, Sample
from restem.publish.importers import import_problems, import_samples, problem_rows, sample_rows
from tests.conftest import is_slice, real_data
from restem.verifiers.math_answer import GSM8KVerifier

GSM8K_TEST, GSM8K_SOLUTIONS = real_data("gsm8k/test.jsonl"), real_data("gsm8k/example_model_solutions.jsonl")
HUMANEVAL = real_data("humaneval/HumanEval.jsonl.gz")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gsm8k_problems_and_external_samples_line_up(tmp_path):
    questions = 42 if is_slice(GSM8K_TEST) else 1319
    stats = import_problems(GSM8K_TEST, "gsm8k", tmp_path / "p.parquet", split="test", subset="gsm8k")
    problems = read_rows(tmp_path / "p.parquet", Problem)
    assert stats["problems"] == len(problems) == questions
    assert all(p["reference"].lstrip("-").replace(".", "").isdigit() for p in problems)
    assert problems == sorted(problems, key=lambda p: p["problem_id"])
    stats = import_samples(GSM8K_SOLUTIONS, tmp_path / "s.parquet", problems=tmp_path / "p.parquet")
    samples = read_rows(tmp_path / "s.parquet", Sample)
    assert stats == {"samples": 4 * questions, "policies": 4, "output": str(tmp_path / "s.parquet"),
                     "problems_matched": questions, "problems_unmatched": 0}
    by_id = {p["problem_id"]: p for p in problems}
    assert all(s["problem_id"] in by_id for s in samples), "every sample points at an imported problem"
    assert {s["engine"] for s in samples} == {"external:6b_finetuning", "external:6b_verification",
                                              "external:175b_finetuning", "external:175b_verification"}
    assert len({s["sample_id"] for s in samples}) == 4 * questions
    # The imported reference grades the imported completion like the labels say, for a few rows.
    raw = [json.loads(line) for line in GSM8K_SOLUTIONS.read_text().splitlines()[:20]]
    labels = {(r["question"], k): r[k]["is_correct"] for r in raw for k in ("175b_verification",)}
    for s in samples:
        key = (s["prompt"], s["engine"].split(":", 1)[1])
        if key in labels:
            verdict = GSM8KVerifier()(s["completion"], by_id[s["problem_id"]])
            assert verdict.correct == labels[key]


def test_humaneval_import_keeps_tests_and_rerun_is_byte_identical(tmp_path):
    src = HUMANEVAL
    import_problems(src, "humaneval", tmp_path / "a.parquet", split="test", subset="humaneval")
    import_problems(src, "humaneval", tmp_path / "b.parquet", split="test", subset="humaneval")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    rows = read_rows(tmp_path / "a.parquet", Problem)
    assert len(rows) == (21 if is_slice(HUMANEVAL) else 164)
    meta = json.loads(rows[0]["meta"])
    assert set(meta) == {"test", "entry_point", "task_id"} and "def check" in meta["test"]
    assert all(r["solution"] for r in rows) and all(r["source"] == "HumanEval.jsonl.gz" for r in rows)


def test_math_and_apps_with_mapping_template_and_parquet(tmp_path):
    math_src = _jsonl(tmp_path / "math.jsonl", [
        {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
        {"problem": "Half?", "solution": "$\\boxed{\\frac{1}{2}}$", "level": "Level 5", "type": "Algebra"},
        {"problem": "Half?", "solution": "$\\boxed{\\frac{1}{2}}$", "level": "Level 5", "type": "Algebra"},
    ])
    rows, duplicates = problem_rows(math_src, "math", "train", "math", template="<user>{prompt}</user>")
    assert duplicates == 1 and [r.reference for r in rows] == ["2", "\\frac{1}{2}"]
    assert rows[0].prompt == "<user>What is $1+1$?</user>" and rows[1].difficulty == 5
    assert rows[0].problem_id == Problem.make_id(rows[0].prompt, "2")

    spec = {"inputs": ["1 2\n"], "outputs": ["3\n"]}
    table = pa.Table.from_pylist([{"statement": "Add two numbers.", "tests": json.dumps(spec),
                                   "solutions": json.dumps(["print(sum(map(int, input().split())))"]),
                                   "difficulty": "interview"}])
    pq.write_table(table, tmp_path / "apps.parquet")
    rows, _ = problem_rows(tmp_path / "apps.parquet", "apps", "train", "apps",
                           mapping={"question": "statement", "input_output": "tests"})
    assert rows[0].prompt == "Add two numbers." and rows[0].difficulty == 2
    assert json.loads(rows[0].meta)["input_output"] == spec
    assert rows[0].solution.startswith("print(")


@pytest.mark.parametrize("record, needle", [
    ({"question": "q"}, "line 1: field `answer` is missing"),
    ({"question": "q", "answer": "no marker"}, "line 1: field `answer` has no `#### <final answer>`"),
])
def test_bad_rows_name_line_and_field(tmp_path, record, needle):
    with pytest.raises(RestemError, match=needle):
        import_problems(_jsonl(tmp_path / "g.jsonl", [record]), "gsm8k", tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_bad_template_format_and_mapping_hint(tmp_path):
    src = _jsonl(tmp_path / "g.jsonl", [{"input": "q", "answer": "#### 3"}])
    with pytest.raises(RestemError, match="no `\\{prompt\\}` field"):
        problem_rows(src, "gsm8k", "train", "x", template="Question: {q}")
    with pytest.raises(RestemError, match="unknown problem format"):
        problem_rows(src, "aime", "train", "x")
    with pytest.raises(RestemError, match="field `question` is missing; map it with --field question="):
        problem_rows(src, "gsm8k", "train", "x")
    rows, _ = problem_rows(src, "gsm8k", "train", "x", mapping={"question": "input"})
    assert rows[0].prompt == "q" and rows[0].reference == "3"


def test_samples_from_plain_text_keys(tmp_path):
    src = _jsonl(tmp_path / "s.jsonl", [{"question": "q", "ground_truth": "#### 4", "mine": "#### 4", "other": {"x": 1}}])
    rows = sample_rows(src, keys=["mine"])
    assert len(rows) == 1 and rows[0].engine == "external:mine" and rows[0].completion == "#### 4"
    assert rows[0].problem_id == Problem.make_id("q", "4")
    with pytest.raises(RestemError, match="field `other` holds no completion text"):
        sample_rows(src, keys=["other"])


def test_commands_mount_on_a_typer_app(tmp_path):
    import typer
    from typer.testing import CliRunner

    from restem.publish.importers import import_problems_command, import_samples_command

    app = typer.Typer()
    app.command("problems")(import_problems_command)
    app.command("samples")(import_samples_command)
    src = _jsonl(tmp_path / "g.jsonl", [{"input": "q", "answer": "#### 3", "m": "#### 3"}])
    out = tmp_path / "p.parquet"
    ok = CliRunner().invoke(app, ["problems", "-i", str(src), "--format", "gsm8k", "-o", str(out),
                                  "--field", "question=input", "--template", "Q: {prompt}\nA:"])
    assert ok.exit_code == 0, ok.output
    assert read_rows(out, Problem)[0]["prompt"] == "Q: q\nA:"
    bad = CliRunner().invoke(app, ["problems", "-i", str(src), "--format", "gsm8k", "-o", str(tmp_path / "x.parquet"),
                                   "--field", "question"])
    assert bad.exit_code == 2 and "--field 'question'" in bad.output
    args = ["samples", "-i", str(src), "-o", str(tmp_path / "s.parquet"), "--key", "m", "--field", "question=input",
            "--field", "ground_truth=answer", "--problems", str(out)]
    bad = CliRunner().invoke(app, args)  # the problems were imported with a template, the samples without
    assert bad.exit_code == 2 and "none of the 1 problems" in bad.output
    bad = CliRunner().invoke(app, args[:-2] + ["--problems", str(tmp_path)])  # a folder of tables (p.parquet)
    assert bad.exit_code == 2 and "none of the 1 problems" in bad.output
    ok = CliRunner().invoke(app, args + ["--template", "Q: {prompt}\nA:"])
    assert ok.exit_code == 0, ok.output
    assert read_rows(tmp_path / "s.parquet", Sample)[0]["problem_id"] == Problem.make_id("Q: q\nA:", "3")
    ok = CliRunner().invoke(app, args[:-2] + ["--problems", str(_problem_table(tmp_path))])
    assert ok.exit_code == 0, ok.output
    assert read_rows(tmp_path / "s.parquet", Sample)[0]["problem_id"] == Problem.make_id("q", "3")


def _problem_table(tmp_path: Path) -> Path:
    """A Problem table holding the untemplated question `q` (answer 3)."""
    out = tmp_path / "plain" / "p.parquet"
    out.parent.mkdir()
    import_problems(_jsonl(tmp_path / "plain.jsonl", [{"question": "q", "answer": "#### 3"}]), "gsm8k", out)
    return out
