"""Tables: explicit Arrow schemas, round trips, deterministic bytes, checked reads, atomic writes."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash, derive_seed
from restem.schemas.io import arrow_schema, atomic_path, read_rows, read_table, write_rows
from restem.schemas.tables import Budget, Kept, ModelMeta, PassRate, Problem, Rejected, Sample, Score


def _problem(i: int, difficulty=None) -> Problem:
    prompt, ref = f"{i}+{i}=", str(2 * i)
    return Problem(problem_id=Problem.make_id(prompt, ref), split="train", subset="pool", prompt=prompt,
                   reference=ref, solution=None, difficulty=difficulty, source="test")


def _score(i: int, correct) -> Score:
    return Score(sample_id=f"s{i}", problem_id=f"p{i}", iteration=1, verifier="v 1", reward=float(bool(correct)),
                 correct=correct, verdict="correct" if correct else "error", extracted=None, steps_valid=None)


def test_schema_is_explicit_and_nullable_where_declared():
    schema = arrow_schema(Score)
    assert schema.field("correct").type == pa.bool_() and schema.field("correct").nullable
    assert schema.field("reward").type == pa.float64() and not schema.field("reward").nullable
    assert schema.names == list(Score.model_fields)


def test_round_trip_equals(tmp_path):
    rows = [_problem(i, difficulty=i % 3) for i in range(20)]
    write_rows(tmp_path / "p.parquet", Problem, rows)
    back = [Problem(**r) for r in read_rows(tmp_path / "p.parquet", Problem)]
    assert sorted(back, key=lambda r: r.problem_id) == sorted(rows, key=lambda r: r.problem_id)


def test_all_null_column_keeps_its_type(tmp_path):
    # Schemas inferred from data pin an all-null column to the null type; ours must stay bool/string.
    write_rows(tmp_path / "s.parquet", Score, [_score(i, None) for i in range(3)])
    schema = pq.read_schema(tmp_path / "s.parquet")
    assert schema.field("correct").type == pa.bool_()
    assert schema.field("extracted").type == pa.string()


def test_same_rows_in_any_order_give_identical_bytes(tmp_path):
    rows = [_problem(i) for i in range(50)]
    write_rows(tmp_path / "a.parquet", Problem, rows)
    write_rows(tmp_path / "b.parquet", Problem, list(reversed(rows)))
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


TABLES = [Problem, Sample, Score, Kept, Rejected, PassRate, Budget]


@pytest.mark.parametrize("model", TABLES, ids=lambda m: m.__name__)
def test_each_table_declares_its_own_sort_key_over_its_fields(model):
    assert "SORT" in vars(model) and model.SORT, f"{model.__name__} must declare its own SORT"
    assert set(model.SORT) <= set(model.model_fields)
    assert "SORT" not in model.model_fields  # a class attribute, never a column
    assert len(set(model.SORT)) == len(model.SORT)


@pytest.mark.parametrize("model", TABLES + [ModelMeta], ids=lambda m: m.__name__)
def test_every_table_field_has_a_description(model):
    # `restem sql --schema` prints them: a field without one is an undocumented column
    missing = [name for name, info in model.model_fields.items() if not (info.description or "").strip()]
    assert not missing, f"{model.__name__}: fields without a description: {missing}"


def _sample(problem: str, policy: str, index: int, temperature: float = 1.0, purpose: str = "grow") -> Sample:
    return Sample(sample_id=content_hash(problem, policy, index, temperature), problem_id=problem, iteration=1,
                  purpose=purpose, policy=policy, engine="e", sample_index=index, seed=index, temperature=temperature,
                  prompt="p", completion=f"{policy}{index}", finish_reason="stop", prompt_tokens=1,
                  completion_tokens=1)


def test_samples_of_every_writer_come_out_in_one_order(tmp_path):
    # Grow and Evaluate (one policy: problem, temperature, index), the voters (one greedy answer per
    # voter: problem, policy): any input order gives the same file, in that order.
    grow = [_sample(p, "pol", i, t, "eval") for p in "ba" for t in (1.0, 0.0) for i in range(3 if t else 1)]
    votes = [_sample(p, v, 0, 0.0, "vote") for p in "ba" for v in ("v2", "v1")]
    for name, rows, expected in [
        ("grow", grow, sorted(grow, key=lambda r: (r.problem_id, r.temperature, r.sample_index))),
        ("votes", votes, sorted(votes, key=lambda r: (r.problem_id, r.policy))),
    ]:
        write_rows(tmp_path / f"{name}.parquet", Sample, rows)
        write_rows(tmp_path / f"{name}-reversed.parquet", Sample, list(reversed(rows)))
        assert (tmp_path / f"{name}.parquet").read_bytes() == (tmp_path / f"{name}-reversed.parquet").read_bytes()
        written = [r["sample_id"] for r in read_rows(tmp_path / f"{name}.parquet", Sample)]
        assert written == [r.sample_id for r in expected]


def test_empty_table_round_trips(tmp_path):
    write_rows(tmp_path / "k.parquet", Kept, [])
    assert read_rows(tmp_path / "k.parquet", Kept) == []


def test_read_rejects_a_table_of_another_schema(tmp_path):
    write_rows(tmp_path / "r.parquet", Rejected, [])
    with pytest.raises(RestemError, match=r"r\.parquet: column `prompt` is missing"):
        read_table(tmp_path / "r.parquet", Kept)


def test_read_rejects_wrong_column_type(tmp_path):
    table = pa.table({name: pa.array([], type=pa.string()) for name in Sample.model_fields})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(RestemError, match="column `iteration` has type string"):
        read_table(tmp_path / "bad.parquet", Sample)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(RestemError, match="nope.parquet: file not found"):
        read_table(tmp_path / "nope.parquet", Sample)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(RestemError, match="junk.parquet: not a readable Parquet file"):
        read_table(tmp_path / "junk.parquet", Sample)


def test_invalid_dict_row_names_the_row(tmp_path):
    good = _problem(1).model_dump()
    bad = {**good, "split": "validation"}
    with pytest.raises(RestemError, match="row 1 does not fit Problem"):
        write_rows(tmp_path / "p.parquet", Problem, [good, bad])
    assert not (tmp_path / "p.parquet").exists()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_unknown_field_is_rejected():
    with pytest.raises(ValueError):
        Problem(**_problem(1).model_dump(), extra_column=1)


def test_hashes_are_stable_and_sensitive():
    assert content_hash("a", 1) == content_hash("a", 1)
    assert content_hash("a", 1) != content_hash("a", 2)
    assert Problem.make_id("1+1=", "2") != Problem.make_id("1+1=", "3")
    assert derive_seed(0, 1, "p", 0) != derive_seed(0, 1, "p", 1)
    assert 0 <= derive_seed("x") < 2**63
