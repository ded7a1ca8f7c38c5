"""`restem export`: a real (miniature) iteration exported as a Hugging Face data set; the rows, hashes,
features and card are checked against the workspace tables, and bad input writes nothing."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from restem.schemas.errors import RestemError
from restem.publish.export import export_command, run
from restem.publish.layout import CONFIGS
from restem.publish.selection import Selection


@pytest.fixture(scope="module")
def workspace(trained_root, tmp_path_factory):
    """A copy of the shared trained workspace with iteration 1 grown, scored and filtered."""
    from restem.stages import filter as filter_stage
    from restem.stages import grow, score

    src, params = trained_root
    root = tmp_path_factory.mktemp("export_ws") / "ws"
    shutil.copytree(src, root)
    grow.run(params, 1, 0, root)
    score.run(params, 1, root)
    filter_stage.run(params, 1, root)
    return root


def _card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rows_and_hashes_match_the_kept_table(workspace, tmp_path):
    out = tmp_path / "ds"
    result = run(workspace, out, Selection(iterations=(1,)), jsonl=True)
    kept = pq.read_table(workspace / "data/iter1/kept.parquet").to_pylist()
    assert result["rows"] == len(kept) > 0
    by_id = {k["sample_id"]: k for k in kept}
    for config in CONFIGS:
        table = pq.read_table(out / config / "train-00000-of-00001.parquet").to_pylist()
        assert sorted(r["sample_id"] for r in table) == sorted(by_id)
        for r in table:
            k = by_id[r["sample_id"]]
            assert r["problem_id"] == k["problem_id"] and r["iteration"] == 1
            prompt, completion = ((r["prompt"], r["completion"]) if config == "prompt_completion" else
                                  (r["messages"][0]["content"], r["messages"][1]["content"]))
            assert (prompt, completion) == (k["prompt"], k["completion"])
            if config == "messages":
                assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        jsonl = (out / config / "train-00000-of-00001.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(jsonl) == len(table)


def test_card_records_lineage(workspace, tmp_path):
    out = tmp_path / "ds"
    run(workspace, out, Selection(all_=True))
    header, body = _card(out)
    kept = pq.read_table(workspace / "data/iter1/kept.parquet")
    assert header["license"] == "apache-2.0"
    assert {c["config_name"] for c in header["configs"]} == set(CONFIGS)
    for info in header["dataset_info"]:
        assert info["splits"] == [{"name": "train", "num_examples": kept.num_rows}]
    samples = pq.read_table(workspace / "data/iter1/samples.parquet").to_pylist()
    scores = pq.read_table(workspace / "data/iter1/scores.parquet").to_pylist()
    rejected = pq.read_table(workspace / "data/iter1/rejected.parquet").to_pylist()
    meta0 = yaml.safe_load((workspace / "models/iter0/restem.json").read_text())
    assert meta0["model_hash"] in body
    assert samples[0]["engine"] in body and samples[0]["policy"] in body
    assert scores[0]["verifier"] in body and kept.column("rule")[0].as_py() in body
    # the right-answer-wrong-reasoning figure, recomputed from the tables
    kept_ids = set(kept.column("sample_id").to_pylist())
    wrong = sum(1 for s in scores if s["sample_id"] in kept_ids and s["steps_valid"] is False)
    assert f"{wrong} of {kept.num_rows}" in body
    for reason in {r["filter_reason"] for r in rejected}:
        n = sum(1 for r in rejected if r["filter_reason"] == reason)
        assert f"dropped: {reason}" in body and f"| {n} |" in body
    assert "Git revision: `not a git repository`" in body  # the temp workspace is no repository
    cut = {s["sample_id"] for s in samples if s["finish_reason"] == "length"}
    assert f"Truncated rows (cut off at max_new_tokens, finish_reason `length`): 0 of {kept.num_rows}" in body
    assert not cut & kept_ids  # filter.keep_truncated is false
    if cut:
        assert "dropped: truncated" in body


def test_card_names_git_revision_and_dirty_flag(workspace, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    shutil.copytree(workspace, repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(git + ["init", "-q"], check=True)
    (repo / "params.yaml").write_text("seed: 0\n")
    subprocess.run(git + ["add", "params.yaml"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    (repo / ".gitignore").write_text("/data\n/models\n/metrics\n/out*\n")
    subprocess.run(git + ["add", ".gitignore"], check=True)
    subprocess.run(git + ["commit", "-qm", "ignore outputs"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    run(repo, repo / "out1", Selection(iterations=(1,)))
    assert f"Git revision: `{head}`, working tree clean" in _card(repo / "out1")[1]
    (repo / "params.yaml").write_text("seed: 1\n")
    run(repo, repo / "out2", Selection(iterations=(1,)))
    assert f"Git revision: `{head}`, working tree dirty" in _card(repo / "out2")[1]


def test_same_inputs_same_bytes(workspace, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(workspace, a, Selection(iterations=(1,)), test_fraction=0.3, jsonl=True)
    run(workspace, b, Selection(iterations=(1,)), test_fraction=0.3, jsonl=True)
    assert _files(a) == _files(b)
    run(workspace, b, Selection(iterations=(1,)), test_fraction=0.3, jsonl=True, force=True)
    assert _files(a) == _files(b)


def test_test_split_holds_whole_problems_and_shards(workspace, tmp_path):
    out = tmp_path / "ds"
    result = run(workspace, out, Selection(iterations=(1,)), test_fraction=0.5, shard_rows=5)
    assert set(result["splits"]) == {"train", "test"}
    problems = {}
    for split in ("train", "test"):
        shards = sorted((out / "prompt_completion").glob(f"{split}-*.parquet"))
        assert len(shards) == -(-result["splits"][split] // 5)
        for shard in shards:
            assert pq.read_metadata(shard).num_rows <= 5
            for pid in pq.read_table(shard).column("problem_id").to_pylist():
                problems.setdefault(pid, set()).add(split)
    assert all(len(s) == 1 for s in problems.values())


def test_sql_selection(workspace, tmp_path):
    out = tmp_path / "ds"
    query = "SELECT sample_id FROM graded WHERE purpose = 'grow' AND correct AND sample_index = 0"
    result = run(workspace, out, Selection(query=query))
    samples = {s["sample_id"]: s for s in pq.read_table(workspace / "data/iter1/samples.parquet").to_pylist()}
    good = {s["sample_id"] for s in pq.read_table(workspace / "data/iter1/scores.parquet").to_pylist() if s["correct"]}
    expected = {i for i, s in samples.items() if i in good and s["sample_index"] == 0}
    got = pq.read_table(out / "messages/train-00000-of-00001.parquet").column("sample_id").to_pylist()
    assert result["rows"] == len(expected) and set(got) == expected
    assert query in _card(out)[1]


def test_datasets_loads_declared_features(workspace, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "ds"
    run(workspace, out, Selection(iterations=(1,)), test_fraction=0.3)
    header, _ = _card(out)
    kept_ids = sorted(pq.read_table(workspace / "data/iter1/kept.parquet").column("sample_id").to_pylist())
    for info in header["dataset_info"]:
        config = info["config_name"]
        declared = datasets.Features._from_yaml_list(info["features"])
        files = {s["name"]: str(out / config / f"{s['name']}-*.parquet") for s in info["splits"]}
        ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf"))
        ids = []
        for split in info["splits"]:
            assert ds[split["name"]].features == declared
            assert ds[split["name"]].num_rows == split["num_examples"]
            ids += ds[split["name"]]["sample_id"]
        assert sorted(ids) == kept_ids
    # the folder itself, through the card's `configs`
    chat = datasets.load_dataset(str(out), "messages", cache_dir=str(tmp_path / "hf2"))
    assert sum(chat.num_rows.values()) == len(kept_ids)


# --------------------------------------------------------------------------------------- bad input


def test_missing_iteration_is_an_error_and_writes_nothing(workspace, tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RestemError, match=r"iteration 7: data/iter7/kept.parquet not found.*\[1\]"):
        run(workspace, out, Selection(iterations=(1, 7)))
    assert not out.exists()
    assert not list(tmp_path.glob(".ds.*"))  # no temp folder left behind


def test_non_empty_output_needs_force(workspace, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RestemError, match="not empty; pass --force"):
        run(workspace, out, Selection(iterations=(1,)))
    assert _files(out) == {"notes.txt": b"mine"}
    run(workspace, out, Selection(iterations=(1,)), force=True)
    assert not (out / "notes.txt").exists() and (out / "README.md").exists()


@pytest.mark.parametrize("selection, message", [
    (Selection(), "exactly one of --iteration"),
    (Selection(iterations=(1,), all_=True), "exactly one of --iteration"),
    (Selection(query="SELECT problem_id FROM kept"), "must return a `sample_id` column"),
    (Selection(query="SELECT sample_id FROM kept WHERE false"), "selection is empty"),
    (Selection(query="SELECT 'nope' AS sample_id"), "in no samples table"),
    (Selection(query="SELECT sample_id FROM no_such_view"), "query failed"),
])
def test_bad_selection(workspace, tmp_path, selection, message):
    with pytest.raises(RestemError, match=message):
        run(workspace, tmp_path / "ds", selection)
    assert not (tmp_path / "ds").exists()


def test_output_cannot_be_the_workspace(workspace):
    with pytest.raises(RestemError, match="holds the workspace"):
        run(workspace, workspace, Selection(iterations=(1,)), force=True)
    with pytest.raises(RestemError, match="holds the workspace"):
        run(workspace, workspace.parent, Selection(iterations=(1,)), force=True)
    assert (workspace / "data/iter1/kept.parquet").exists()


def test_cli_exit_code_and_message(workspace, tmp_path):
    import typer

    app = typer.Typer()
    app.command("export")(export_command)
    app.command("other")(lambda: None)  # two commands, so `export` is addressed by name as in restem
    runner = CliRunner()
    bad = runner.invoke(app, ["export", "--root", str(workspace), "-i", "3", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "iteration 3" in bad.output and not (tmp_path / "x").exists()
    ok = runner.invoke(app, ["export", "--root", str(workspace), "--all", "-o", str(tmp_path / "y")])
    assert ok.exit_code == 0, ok.output
    assert "wrote" in ok.output and (tmp_path / "y/messages/train-00000-of-00001.parquet").exists()


def test_card_records_the_math_answer_extraction(workspace, tmp_path):
    """math/gsm8k score rows carry `extraction` in their details and the card names it; the arithmetic
    rows of the shared workspace carry none and the card says nothing about it."""
    import json

    from restem.schemas.io import read_rows, write_rows
    from restem.schemas.tables import Score

    run(workspace, tmp_path / "plain", Selection(iterations=(1,)))
    assert "answer extraction" not in _card(tmp_path / "plain")[1]
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    path = ws / "data/iter1/scores.parquet"
    path.chmod(0o644)
    rows = [Score(**{**s, "details": json.dumps({**json.loads(s["details"]), "extraction": "lenient"})})
            for s in read_rows(path, Score)]
    write_rows(path, Score, rows)
    run(ws, tmp_path / "math", Selection(iterations=(1,)))
    assert "Math answer extraction (`score.extraction`, recorded in each score row's details): `lenient`" in \
        _card(tmp_path / "math")[1]


def test_messages_hold_the_raw_question_not_the_rendered_prompt():
    """A chat-templated run's samples carry the template's markup in `prompt`; the messages config's user turn is
    the problem's question, so a trainer applying its chat template does not wrap the markup twice."""
    from restem.publish.layout import TRACE_COLUMNS, shape_tables

    rendered = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n" \
               "<|im_start|>assistant\n"
    row = {n: None for n, _, _ in TRACE_COLUMNS} | {"prompt": rendered, "completion": "5", "question": "What is 2+3?"}
    tables = shape_tables([row])
    assert tables["messages"].to_pylist()[0]["messages"] == [{"role": "user", "content": "What is 2+3?"},
                                                             {"role": "assistant", "content": "5"}]
    assert tables["prompt_completion"].to_pylist()[0]["prompt"] == rendered  # what the policy was given, as sampled
