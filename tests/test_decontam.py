"""Decontamination (restem/decontam.py): normalisation and n-grams on hand-made tables, a planted test problem
caught and dropped by the problems stage, and `restem audit contamination` on two files and on a workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from restem.decontam import Item, build_index, ngrams, overlaps, words
from restem.query.contamination import contamination
from restem.query.audits import audit_command
from restem.schemas.errors import RestemError
from restem.schemas.io import read_rows
from restem.schemas.params import Params
from restem.schemas.tables import Problem
from restem.stages import problems
from restem.workspace import DECONTAM_FILE, problems_dir
from tests.conftest import real_data


@pytest.mark.parametrize("text, expected", [
    ("Janet’s ducks lay 16 eggs per day.", ["janet", "s", "ducks", "lay", "16", "eggs", "per", "day"]),
    ("What is 2+3=?", ["what", "is", "2", "3"]),
    ("  $1,000.50\tfor\nTWO  ", ["1", "000", "50", "for", "two"]),
    ("snake_case and <<4*5=20>>20", ["snake", "case", "and", "4", "5", "20", "20"]),
    ("ﬁne Ｆｕｌｌwidth", ["fine", "fullwidth"]),  # NFKC: ligature and full-width letters
    ("Ärger über Öl", ["ärger", "über", "öl"]),  # letters with accents are letters, not punctuation
    ("... !!! ---", []),
])
def test_words_lowercase_strip_punctuation_and_split(text, expected):
    assert words(text) == expected


@pytest.mark.parametrize("text, n, expected", [
    ("a b c d", 3, ["a b c", "b c d"]),
    ("a b c d", 4, ["a b c d"]),
    ("a b c d", 1, ["a", "b", "c", "d"]),
    ("a, b. C!", 8, ["a b c"]),  # shorter than n: the whole text is one n-gram
    ("", 8, []),
    ("a b a b a", 2, ["a b", "b a", "a b", "b a"]),
])
def test_ngrams_by_n(text, n, expected):
    assert ngrams(text, n) == expected


def test_n_must_be_positive():
    with pytest.raises(RestemError, match="n is 0"):
        ngrams("a b", 0)


TEST = [Item("test", "t1", ("Tom has 3 red apples and 4 green apples in a basket. How many apples?",)),
        Item("test", "t2", ("A train leaves at noon and travels 60 miles per hour for two hours.",))]


def test_overlap_needs_n_shared_consecutive_words():
    # 7 words in common with t1 ("tom has 3 red apples and 4"), then a different word
    near = Item("train", "near", ("Tom has 3 red apples and 4 yellow pears on a table.",))
    same = Item("train", "same", ("TOM has 3 red apples, and 4 green apples!",))  # 9 words of t1: 2 eight-grams
    other = Item("train", "other", ("Nothing here is shared with any test item at all, really.",))
    rows = overlaps([near, same, other], build_index(TEST, 8))
    assert [(r["train_id"], r["test_id"], r["shared"], r["ngram"]) for r in rows] == [
        ("same", "t1", 2, "tom has 3 red apples and 4 green")]
    # with n = 7 the near miss is caught too, on its one shared 7-gram
    rows7 = overlaps([near], build_index(TEST, 7))
    assert [(r["train_id"], r["shared"], r["ngram"]) for r in rows7] == [("near", 1, "tom has 3 red apples and 4")]


def test_fields_are_cut_separately_and_short_items_match_whole():
    # "... per hour" + "for two hours" would make an 8-gram across the field boundary; fields are cut apart
    split = Item("train", "split", ("leaves at noon and travels 60 miles per hour", "for two hours in total"))
    rows = overlaps([split], build_index(TEST, 8))
    assert {r["ngram"] for r in rows} == {"leaves at noon and travels 60 miles per"}  # within the first field only
    short_test = [Item("test", "s", ("12+34=",))]
    assert [r["train_id"] for r in overlaps([Item("train", "a", ("12 + 34 =",)), Item("train", "b", ("12+35=",)),
                                             Item("train", "c", ("12+34=56",))], build_index(short_test, 8))] == ["a"]


def test_template_ngrams_shared_by_most_test_items_are_ignored():
    template = "Solve the problem below and put the final answer last."
    tests = [Item("test/x", f"t{i}", (f"{template} What is {i} times {i + 7} plus {i * 3} minus one?",))
             for i in range(6)]
    train = [Item("train", "p", (f"{template} How many legs do 4 spiders have?",)),
             Item("train", "q", (f"{template} What is 2 times 9 plus 6 minus one?",))]  # the body of t2
    summary = contamination(train, tests, 8)
    assert summary[0]["contaminated_train_items"] == 1 and summary[0]["template_ngrams_ignored"] > 0
    assert [r["train_id"] for r in contamination(train, tests, 8, listing=True)] == ["q"]


# ------------------------------------------------------------------------------ the problems stage


def _gsm8k(lines: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


@pytest.fixture
def planted(tmp_path, tiny_raw):
    """A files workspace from the GSM8K test slice: 30 test problems, 10 other train problems plus one test
    problem planted with its wording lightly changed, 2 demos, and a benchmark file in inputs/decontam/."""
    rows = [json.loads(x) for x in real_data("gsm8k/test.jsonl").read_text().splitlines()[:42]]
    test, train, demos = rows[:30], rows[30:40], rows[40:42]
    copy = dict(test[7], question=test[7]["question"].upper().replace(".", " ."))  # same words, other case and spacing
    inputs = tmp_path / "inputs" / "problems"
    _gsm8k(test, inputs / "test.jsonl")
    _gsm8k(train + [copy], inputs / "train.jsonl")
    _gsm8k(demos, inputs / "demos.jsonl")
    _gsm8k([{"problem": train[3]["question"]}], tmp_path / "inputs" / "decontam" / "bench.jsonl")
    tiny_raw["problems"] = {"source": "files", "seed": 0, "files": {
        "train": "inputs/problems/train.jsonl", "test": "inputs/problems/test.jsonl",
        "demos": "inputs/problems/demos.jsonl", "prompt_field": "question", "reference_field": "answer",
        "solution_field": "answer"}}
    return tmp_path, tiny_raw, copy, train[3]


def _run(root: Path, raw: dict, **decontaminate) -> dict[str, int]:
    raw = json.loads(json.dumps(raw))
    if decontaminate:
        raw["problems"]["decontaminate"] = decontaminate
    return problems.run(Params.model_validate(raw), root)


def test_planted_test_problem_is_caught_and_dropped(planted):
    root, raw, copy, bench = planted
    assert _run(root, raw) == {"train": 11, "test": 30, "demos": 2}
    default = {p.name: p.read_bytes() for p in problems_dir(root).iterdir()}
    assert DECONTAM_FILE not in default  # mode none (the default) writes nothing new

    counts = _run(root, raw, mode="drop", against=[{"path": "inputs/decontam/bench.jsonl", "fields": ["problem"]}])
    assert counts["train"] == 9  # the planted copy and the benchmark's problem
    kept = {p["prompt"] for p in read_rows(problems_dir(root) / "train.parquet", Problem)}
    assert copy["question"] not in kept and bench["question"] not in kept
    record = json.loads((problems_dir(root) / DECONTAM_FILE).read_text())
    assert record["mode"] == "drop" and record["n"] == 8
    assert record["test_sets"] == {"bench.jsonl": 1, "test/test": 30}
    assert record["counts"]["train"] == {"checked": 11, "contaminated": 2, "dropped": 2}
    assert record["counts"]["demos"] == {"checked": 2, "contaminated": 0, "dropped": 0}
    assert {e["test_set"] for e in record["examples"]} == {"bench.jsonl", "test/test"}
    # the test split itself is never changed
    assert (problems_dir(root) / "test.parquet").read_bytes() == default["test.parquet"]

    # report: the same record, nothing dropped; none again: the default bytes
    assert _run(root, raw, mode="report")["train"] == 11
    assert json.loads((problems_dir(root) / DECONTAM_FILE).read_text())["counts"]["train"]["contaminated"] == 1
    _run(root, raw)
    assert {p.name: p.read_bytes() for p in problems_dir(root).iterdir()} == default


def test_benchmark_file_outside_inputs_decontam_is_an_error(planted):
    root, raw, _, _ = planted
    with pytest.raises(RestemError, match=r"against\[0\].path is .*outside inputs/decontam/"):
        _run(root, raw, mode="report", against=[{"path": "inputs/problems/test.jsonl"}])
    with pytest.raises(RestemError, match=r"bench.jsonl, line 1: none of the fields \['question'\]"):
        _run(root, raw, mode="report", against=[{"path": "inputs/decontam/bench.jsonl", "fields": ["question"]}])
    assert not problems_dir(root).exists()  # nothing half-written


# ----------------------------------------------------------------------------------------- the audit


def _cli(args: list[str]):
    app = typer.Typer()
    app.command("audit")(audit_command)
    app.command("other")(lambda: None)
    return CliRunner().invoke(app, ["audit", *args])


def test_audit_on_two_files_and_on_the_workspace(planted):
    root, raw, copy, _ = planted
    files = ["contamination", "--train", str(root / "inputs/problems/train.jsonl"),
             "--test", str(root / "inputs/problems/test.jsonl"), "--field", "question", "--format", "json"]
    result = _cli(files)
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.stdout)
    assert (summary["train_items"], summary["test_items"], summary["contaminated_train_items"]) == (11, 30, 1)
    listing = json.loads(_cli(files + ["--list"]).stdout)
    assert [(r["train_id"], r["test_id"]) for r in listing] == [("line 11", "line 8")]
    assert listing[0]["shared"] > 10 and listing[0]["ngram"] in " ".join(words(copy["question"]))

    _run(root, raw)
    result = _cli(["contamination", "--root", str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    by_set = {r["train_set"]: r for r in json.loads(result.stdout)}
    assert by_set["train"]["contaminated_train_items"] == 1 and by_set["demo"]["contaminated_train_items"] == 0
    bad = _cli(["contamination", "--train", str(root / "inputs/problems/train.jsonl")])
    assert bad.exit_code == 2 and "give both --train FILE and --test FILE" in bad.output


def test_kept_completions_are_checked_per_filter(tmp_path):
    from restem.query.sql import connect
    from restem.query.contamination import workspace_items
    from restem.schemas.io import write_rows
    from tests.test_sql import GOOD_GSM, make_workspace

    root = make_workspace(tmp_path / "ws")
    write_rows(root / "data/problems/test.parquet", Problem, [Problem(
        problem_id="T1", split="test", subset="gsm", prompt=GOOD_GSM, reference="6", source="test")])
    con = connect(root)
    try:
        train, tests = workspace_items(con, root)
    finally:
        con.close()
    assert {i.set for i in train} == {"train", "kept@1", "kept@2"} and [i.set for i in tests] == ["test/gsm"]
    rows = contamination(train, tests, 8, listing=True)
    # iteration 1 kept s3, whose completion is the test prompt; iteration 2's b1 differs from the 7th word on
    assert [(r["train_set"], r["train_id"], r["test_id"]) for r in rows] == [("kept@1", "s3", "T1")]
    assert rows[0]["shared"] == len(ngrams(GOOD_GSM, 8))


def test_benchmark_folder_is_a_dep_of_the_problems_stage():
    """DVC must see a replaced benchmark file: inputs/decontam/ is in git (.gitkeep) and a dep of `problems`."""
    import yaml

    from tests.conftest import REPO

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["problems"]
    assert "inputs/decontam" in stage["deps"] and "problems" in stage["params"]
    assert (REPO / "inputs/decontam/.gitkeep").is_file()


def test_audit_of_a_workspace_reads_the_benchmark_files_of_its_params(planted):
    from tests.conftest import write_params

    root, raw, _, bench = planted
    raw = json.loads(json.dumps(raw))
    raw["problems"]["decontaminate"] = {"mode": "none", "n": 8,
                                        "against": [{"path": "inputs/decontam/bench.jsonl", "fields": ["problem"]}]}
    _run(root, raw)
    write_params(root / "params.yaml", raw)
    result = _cli(["contamination", "--root", str(root), "--format", "json", "--list"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    # the planted copy against the test split, and the benchmark's one problem against the Grow pool's copy of it
    assert sorted((r["train_set"], r["test_set"]) for r in rows) == [("train", "bench.jsonl"), ("train", "test/test")]
    (hit,) = [r for r in rows if r["test_set"] == "bench.jsonl"]
    assert hit["test_id"] == "line 1" and hit["train_text"].startswith(bench["question"][:40])


def test_solutions_are_compared_only_when_asked(planted):
    """Two problems with other questions but the same worked solution: prompts alone find nothing."""
    root, raw, _, _ = planted
    test = [json.loads(x) for x in (root / "inputs/problems/test.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in (root / "inputs/problems/train.jsonl").read_text().splitlines()][:10]
    train.append({"question": "An entirely new question about pens and pencils in a shop?",
                  "answer": test[5]["answer"]})
    _gsm8k(train, root / "inputs/problems/train.jsonl")
    assert _run(root, raw, mode="drop")["train"] == 11
    assert _run(root, raw, mode="drop", solutions=True)["train"] == 10
    record = json.loads((problems_dir(root) / DECONTAM_FILE).read_text())
    assert record["solutions"] is True and record["counts"]["train"]["dropped"] == 1
