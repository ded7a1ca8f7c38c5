"""`restem export --pairs` (restem/publish/pairs.py): the pairing rule on a hand-made table, the pairs folder
loaded offline with `datasets` with the columns TRL's DPOTrainer reads, on tests/test_sql.py's hand-made
workspace and on a real iteration of the trained tiny model; and the contamination record of the cards."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from restem.schemas.errors import RestemError
from restem.publish.export import export_command, run
from restem.publish.selection import Selection
from tests.test_export import _card, _files, workspace  # noqa: F401  (workspace: the module fixture)



def _s(sid, correct, text=None, pid="P", it=1):
    return {"sample_id": sid, "problem_id": pid, "iteration": it, "prompt": f"prompt {pid}",
            "completion": text or f"text {sid}", "difficulty": 3, "correct": correct}


def test_pairing_rule_on_a_hand_made_table():
    from restem.publish.pairs import make_pairs

    samples = [_s("c2", True), _s("c1", True), _s("c3", True, text="text c1"),  # c3 repeats c1's text
               _s("r3", False), _s("r1", False), _s("r2", False), _s("u1", None),  # u1: unverifiable, skipped
               _s("x1", True, pid="Q"), _s("x2", True, pid="Q"),  # Q: only correct samples, no pair
               _s("y1", False, pid="Q", it=2), _s("z1", None, pid="P", it=2)]
    pairs, stats = make_pairs(samples, 4)
    # C = [c1, c2], R = [r1, r2, r3]: i < min(4, max(2, 3)) = 3 pairs, every sample used, none repeated
    assert [(p["chosen_sample_id"], p["rejected_sample_id"]) for p in pairs] == [("c1", "r1"), ("c2", "r2"),
                                                                                ("c1", "r3")]
    assert pairs[0]["prompt"] == "prompt P" and pairs[0]["chosen"] == "text c1" and pairs[0]["rejected"] == "text r1"
    one = stats[1]
    assert (one.problems, one.with_pairs, one.only_correct, one.correct, one.incorrect, one.skipped,
            one.repeated_text, one.pairs) == (2, 1, 1, 5, 3, 1, 1, 3)
    two = stats[2]
    assert (two.problems, two.only_incorrect, two.none_judged, two.pairs) == (2, 1, 1, 0)
    capped, _ = make_pairs(samples, 2)
    assert [(p["chosen_sample_id"], p["rejected_sample_id"]) for p in capped] == [("c1", "r1"), ("c2", "r2")]
    assert make_pairs(list(reversed(samples)), 4)[0] == pairs  # input order does not matter
    with pytest.raises(RestemError, match="--pairs-per-problem 0"):
        make_pairs(samples, 0)


@pytest.fixture
def hand_made(tmp_path):
    from tests.test_sql import make_workspace

    return make_workspace(tmp_path / "hand")


def _load(datasets, folder, config, tmp_path):
    return datasets.load_dataset("parquet", data_files={"train": str(folder / config / "train-*.parquet")},
                                 cache_dir=str(tmp_path / "hf" / config))["train"]


def test_pairs_export_loads_offline_with_trl_columns(hand_made, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "pairs"
    result = run(hand_made, out, Selection(all_=True), pairs=True, jsonl=True)
    # tests/test_sql.py's GROW: only P2 has a right and a wrong sample, in both iterations
    assert result["rows"] == 2 and result["splits"] == {"train": 2}
    plain = _load(datasets, out, "preference", tmp_path)
    assert plain.column_names[:3] == ["prompt", "chosen", "rejected"]  # what trl.DPOTrainer reads
    assert {c: str(plain.features[c].dtype) for c in ("prompt", "chosen", "rejected")} == \
        {"prompt": "string", "chosen": "string", "rejected": "string"}
    assert [(r["chosen_sample_id"], r["rejected_sample_id"], r["iteration"], r["problem_id"]) for r in plain] == \
        [("s3", "s4", 1, "P2"), ("b1", "b2", 2, "P2")]
    assert plain[0]["prompt"] == "prompt P2" and plain[0]["rejected"].endswith("A: 5")
    chat = _load(datasets, out, "preference_messages", tmp_path)
    assert chat[0]["prompt"] == [{"role": "user", "content": "prompt P2"}]
    assert chat[0]["chosen"] == [{"role": "assistant", "content": plain[0]["chosen"]}]
    assert chat[1]["rejected"] == [{"role": "assistant", "content": "no idea"}]
    header, body = _card(out)
    assert [c["config_name"] for c in header["configs"]] == ["preference", "preference_messages"]
    assert "dpo" in header["tags"] and header["dataset_info"][0]["splits"] == [{"name": "train", "num_examples": 2}]
    assert "(`--pairs-per-problem 4`)" in body
    assert "| 1 | 3 | 1 | 1 | 1 | 0 | 3 | 3 | 0 | 0 | 1 |" in body  # iteration 1: P1 right only, P3 wrong only
    assert "| 2 | 3 | 1 | 1 | 1 | 0 | 3 | 3 | 0 | 1 | 1 |" in body  # iteration 2: a2 repeats a1's text
    assert "Exported rows: not checked, the workspace has no test problems" in body
    # the folder itself through the card's configs, and the same bytes again
    assert datasets.load_dataset(str(out), "preference_messages", cache_dir=str(tmp_path / "hf2"))["train"].num_rows == 2
    again = tmp_path / "again"
    run(hand_made, again, Selection(all_=True), pairs=True, jsonl=True)
    assert _files(again) == _files(out)


def test_pairs_skip_unverifiable_and_follow_the_selection(hand_made, tmp_path):
    from restem.schemas.io import read_rows, write_rows
    from restem.schemas.tables import Score

    path = hand_made / "data/iter1/scores.parquet"
    rows = read_rows(path, Score)
    s3 = next(r for r in rows if r["sample_id"] == "s3")
    write_rows(path, Score, rows + [dict(s3, verifier="gsm8k 1", correct=None, verdict="unverifiable")])
    result = run(hand_made, tmp_path / "p", Selection(all_=True), pairs=True)
    assert result["rows"] == 1  # s3 has an unverifiable verdict now: iteration 1 has no pair
    assert "| 1 | 3 | 0 | 1 | 2 | 0 | 2 | 3 | 1 | 0 | 0 |" in _card(tmp_path / "p")[1]
    assert run(hand_made, tmp_path / "q", Selection(iterations=("2",)), pairs=True)["rows"] == 1
    with pytest.raises(RestemError, match="no problem has both a correct and an incorrect"):
        run(hand_made, tmp_path / "r", Selection(iterations=("1",)), pairs=True)
    with pytest.raises(RestemError, match="iteration 3: data/iter3/samples.parquet not found"):
        run(hand_made, tmp_path / "s", Selection(iterations=("3",)), pairs=True)
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_pairs_of_a_real_iteration(workspace, tmp_path):
    """The trained tiny model's iteration 1: every pair is a verifier-correct and a verifier-wrong sample of one
    problem, and the CLI says how many pairs it wrote."""
    out = tmp_path / "real"
    import typer

    app = typer.Typer()
    app.command("export")(export_command)
    app.command("other")(lambda: None)
    res = CliRunner().invoke(app, ["export", "--output", str(out), "--iteration", "1", "--pairs",
                                             "--pairs-per-problem", "2", "--root", str(workspace)])
    assert res.exit_code == 0, res.output
    pairs = pq.read_table(out / "preference/train-00000-of-00001.parquet").to_pylist()
    scores = {r["sample_id"]: r["correct"] for r in pq.read_table(workspace / "data/iter1/scores.parquet").to_pylist()}
    samples = {r["sample_id"]: r for r in pq.read_table(workspace / "data/iter1/samples.parquet").to_pylist()}
    assert pairs, "the trained tiny model should get some problems right and some wrong"
    for p in pairs:
        c, r = samples[p["chosen_sample_id"]], samples[p["rejected_sample_id"]]
        assert scores[c["sample_id"]] is True and scores[r["sample_id"]] is False
        assert c["problem_id"] == r["problem_id"] == p["problem_id"] and p["prompt"] == c["prompt"]
        assert (p["chosen"], p["rejected"]) == (c["completion"], r["completion"])
    per_problem = Counter(p["problem_id"] for p in pairs)
    assert max(per_problem.values()) <= 2
    assert f"wrote {len(pairs)} rows" in res.output
    assert "### Contamination check" in _card(out)[1]


def test_card_records_the_contamination_check(hand_made, tmp_path):
    from restem.schemas.io import write_json, write_rows
    from restem.schemas.tables import Problem
    from tests.test_sql import GOOD_GSM

    write_rows(hand_made / "data/problems/test.parquet", Problem, [Problem(
        problem_id="T1", split="test", subset="gsm", prompt=GOOD_GSM, reference="6", source="test")])
    write_json(hand_made / "data/problems/decontam.json", {  # as the problems stage writes it with mode drop
        "mode": "drop", "n": 6, "test_sets": {"test/gsm": 1, "aime.jsonl": 30},
        "counts": {"train": {"checked": 4, "contaminated": 1, "dropped": 1},
                   "demos": {"checked": 2, "contaminated": 0, "dropped": 0}}})
    run(hand_made, tmp_path / "sft", Selection(all_=True))
    body = _card(tmp_path / "sft")[1]
    assert ("Problems stage (params `problems.decontaminate`, mode `drop`, n = 6, prompts), against `aime.jsonl` "
            "(30 items), `test/gsm` (1 items): demos: 0 of 2 contaminated, 0 dropped; train: 1 of 4 contaminated, "
            "1 dropped.") in body
    # the check uses the stage's n (6): kept s3 is the test prompt word for word (all 6 of its 6-grams); kept b1
    # shares its first six words only
    assert ("n = 6, against the test problems of `test/gsm` (1 items): 2 of 5 share an n-gram with 1 test item(s)."
            in body)
    assert "| `b1` | `T1` | 1 | he buys 2 3 2 3 |" in body and "| `s3` | `T1` | 6 | he buys 2 3 2 3 |" in body
