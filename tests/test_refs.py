"""A model or data reference (schemas/refs.py): an iteration or a ReST step, parsed and named in one place."""

from __future__ import annotations


import pytest

from restem.schemas.refs import Ref, ref_order
from restem.workspace import iter_dir, model_dir, model_ref


def test_parse_format_and_order():
    assert Ref.parse("1b") == Ref(1, "b") and Ref.parse(2) == Ref(2) and Ref.parse(" 3 ") == Ref(3)
    assert str(Ref(1, "b")) == "1b" and Ref(1, "b").folder == "iter1b" and Ref(0).folder == "iter0"
    assert sorted([Ref(2), Ref(1, "c"), Ref(0), Ref(1), Ref(1, "b"), Ref(10)]) == [
        Ref(0), Ref(1), Ref(1, "b"), Ref(1, "c"), Ref(2), Ref(10)]
    assert sorted(["2", "1b", "10", "1", "x"], key=ref_order) == ["1", "1b", "2", "10", "x"]
    assert Ref(1, "b").is_step and not Ref(1).is_step
    assert Ref(1).legacy() == 1 and Ref(1, "b").legacy() == "1b"


@pytest.mark.parametrize("bad", ["b1", "1B", "", "1.5", "-1", True, None, 1.0])
def test_bad_refs_are_errors(bad):
    with pytest.raises(ValueError, match="neither an iteration number nor a step key"):
        Ref.parse(bad)


def test_folders_and_the_command_line_use_the_same_rule(tmp_path):
    assert Ref.from_folder("iter1b") == Ref(1, "b") and Ref.from_folder("iter12") == Ref(12)
    assert Ref.from_folder("voters") is None and Ref.from_folder("iter") is None and Ref.from_folder("iter1B") is None
    assert iter_dir(Ref(1, "b"), tmp_path) == iter_dir("1b", tmp_path) == tmp_path / "data" / "iter1b"
    assert model_dir(Ref(2), tmp_path) == model_dir(2, tmp_path) == tmp_path / "models" / "iter2"
    assert model_ref("1b") == "1b" and model_ref("2") == 2
    with pytest.raises(ValueError, match="'b1' is neither"):
        model_ref("b1")
