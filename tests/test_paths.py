"""One reasoning-path rule (verifiers/paths.py): the filter's `dedup: equations` key and SQL's
`reasoning_path(completion)` are the same function, so the audit counts the paths the filter compares."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from restem.query import sql
from restem.filtering import dedup_key
from restem.verifiers.arithmetic import scratchpad
from restem.verifiers.paths import equations, reasoning_path

CASES = [
    # arithmetic scratchpads: one equation per step, spacing ignored, the answer is not part of the path
    ("7+5+0=12,4+1+1=6;62", ("7+5+0=12", "4+1+1=6")),
    ("7+5+0=12 , 4+1+1=6 ;62", ("7+5+0=12", "4+1+1=6")),
    ("+,0+8+0=8+4=8,0+1=8,8", ("0+8+0=8+4=8", "0+1=8")),  # a malformed scratchpad keeps its odd equations
    # calculator annotations win when there are any
    ("He has <<5*3=15>>15 pens and 15 + 2 = 17 in all.\n#### 17", ("5*3=15",)),
    ("Natalia sold <<48/2=24>>24 and <<48+24=72>>72. #### 72", ("48/2=24", "48+24=72")),
    # plain text: the equation, not the words around it; money, percent and variables belong to it
    ("So she has 16 - 3 = 13 eggs left.\nShe earns 13 * 2 = $26.", ("16-3=13", "13*2=$26")),
    ("Let x be the wins.\nx + x + 8 = 22\n2x = 14\nx = 7", ("x+x+8=22", "2x=14", "x=7")),
    ("It is 100% - 25% = 75% of the price", ("100%-25%=75%",)),
    ("The answer is 7", ()),
]


@pytest.mark.parametrize("completion, expected", CASES)
def test_equations(completion, expected):
    assert equations(completion) == expected


def test_a_solution_without_equations_is_its_own_path_and_no_path_can_equal_such_a_text():
    assert reasoning_path("The answer is 7") == "The answer is 7"
    assert reasoning_path("7+5+0=12,4+1+1=6;62") == "7+5+0=12 | 4+1+1=6"
    # any `=` makes an equation, so only texts without `=` are their own key
    assert all("=" in reasoning_path(t) for t in ("a = b", "=", "x=.", "<< = >> and words"))


def test_annotated_and_plain_solutions_with_the_same_equations_share_a_path():
    annotated = "He bakes 7 * 70 = <<7*70=490>>490 loaves and sells 490 - 40 = <<490-40=450>>450."
    plain = "Seven times that is 7*70=490 loaves.\nThe bakery has 490 - 40 = 450 loaves of bread."
    assert reasoning_path(annotated) == reasoning_path(plain) == "7*70=490 | 490-40=450"


def test_the_filter_and_sql_use_the_one_rule(tmp_path):
    texts = [c for c, _ in CASES] + [scratchpad(a, b) for a, b in ((47, 15), (999, 1), (123456, 78))] + [None]
    con = duckdb.connect()
    sql.create_views(con, sql.discover(tmp_path))
    con.register("_t", pa.table({"i": list(range(len(texts))), "c": pa.array(texts, pa.string())}))
    via_sql = [r[0] for r in con.execute("SELECT reasoning_path(c) FROM _t ORDER BY i").fetchall()]
    assert via_sql == [dedup_key(t, "equations") for t in texts[:-1]] + [None]
