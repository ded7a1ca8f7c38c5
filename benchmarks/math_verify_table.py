"""Agreement with Math-Verify's own test table: restem's `math` grading against bare math-verify, one run.

Math-Verify (github.com/huggingface/Math-Verify) keeps its regression cases in `tests/test_all.py` as
pytest-parametrized (gold, pred, expected, ...) rows. This script reads that file's syntax tree (its
path is the argument; the table is not copied here), takes every row of every parametrized test, and
grades each row three ways:

- restem: gold as the `reference`, pred as the `completion`, through the grading code
  `restem verify math` runs (`MathVerifier(extraction=...)`), for `--extraction lenient` and `strict`;
- bare math-verify: `verify(parse(gold), parse(pred))` with default settings;
- math-verify with each test's own call (its `match_types`, `precision`, `allow_set_relation_comp`):
  a check that the rows were read faithfully (it should agree on every row).

A row's expectation holds for the configuration its test passes. Rows whose test passes something
other than math-verify's defaults are marked in the list of misses (`[precision=2]`, ...), because a
grader with fixed settings can only agree with one side of such pairs.

Run: `python benchmarks/math_verify_table.py /path/to/Math-Verify/tests/test_all.py` (about a minute).
The test file's `f"{math.sqrt(17):.15f}"` row is evaluated with `math` only; every other value is a literal.
"""

from __future__ import annotations

import argparse
import ast
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULTS = {"match_types": ("latex", "expr"), "precision": 6, "allow_set_relation_comp": False}


@dataclass
class Row:
    test: str
    gold: str
    pred: str
    expected: bool
    config: dict = field(default_factory=dict)

    def non_default(self) -> dict:
        return {k: v for k, v in self.config.items() if DEFAULTS.get(k) != v}


def _value(node: ast.AST):
    """A literal, or an f-string over `math` (the only non-literal value the table holds)."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        if isinstance(node, ast.JoinedStr) and all(
                isinstance(n, (ast.Name, ast.Attribute, ast.Call, ast.Constant, ast.JoinedStr, ast.FormattedValue,
                               ast.Load)) for n in ast.walk(node)):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if names <= {"math"}:
                return eval(compile(ast.Expression(node), "<table>", "eval"), {"__builtins__": {}, "math": math})
        raise


def _call_config(fn: ast.FunctionDef, row: dict) -> dict:
    """The keyword arguments the test passes to its comparison, with the row's own values filled in."""
    config = dict(DEFAULTS)
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "compare_strings":
            for kw in node.keywords:
                if isinstance(kw.value, ast.Name):
                    config[kw.arg] = row[kw.value.id]
                else:
                    value = ast.literal_eval(kw.value)
                    config[kw.arg] = tuple(value) if isinstance(value, list) else value
    return config


def read_rows(path: Path) -> list[Row]:
    """Every row of every `@pytest.mark.parametrize` test in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rows = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize"):
                continue
            names = [n.strip() for n in ast.literal_eval(dec.args[0]).split(",")]
            for element in dec.args[1].elts:
                row = dict(zip(names, (_value(v) for v in element.elts)))
                rows.append(Row(fn.name, row["gold"], row["pred"], bool(row["expected"]), _call_config(fn, row)))
    return rows


def restem_says(rows: list[Row], extraction: str) -> list[bool]:
    from restem.verifiers.base import get_verifier

    verifier = get_verifier("math", extraction=extraction)
    return [verifier(r.pred, {"reference": r.gold}).verdict == "correct" for r in rows]


def bare_says(rows: list[Row]) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(r.gold), parse(r.pred))) for r in rows]


def own_config_says(rows: list[Row]) -> list[bool]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    out = []
    for r in rows:
        targets = [LatexExtractionConfig(boxed_match_priority=0) if t == "latex" else ExprExtractionConfig()
                   for t in r.config["match_types"]]
        out.append(bool(verify(parse(r.gold, targets), parse(r.pred, targets), float_rounding=r.config["precision"],
                               allow_set_relation_comp=r.config["allow_set_relation_comp"])))
    return out


def _short(text: str, n: int = 70) -> str:
    text = " ".join(text.replace("\n", " \\n ").split())  # newlines shown: some rows are about them
    return text if len(text) <= n else text[: n // 2 - 2] + " … " + text[-(n // 2 - 2):]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_all", type=Path, help="path of Math-Verify's tests/test_all.py")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # math-verify warns about its own timeouts on every call
    rows = read_rows(args.test_all)
    literal = [i for i, r in enumerate(rows) if r.test != "test_float_precision"]
    tests = sorted({r.test for r in rows})
    print(f"{len(rows)} rows in {len(tests)} parametrized tests ({len(literal)} rows in {len(tests) - 1} tests "
          "without the f-string row of test_float_precision)")
    results = {"restem lenient": restem_says(rows, "lenient"), "restem strict": restem_says(rows, "strict"),
               "math-verify bare (defaults)": bare_says(rows),
               "math-verify, each test's own call": own_config_says(rows)}
    for name, said in results.items():
        agree = [s == r.expected for s, r in zip(said, rows)]
        print(f"{name:<36} {sum(agree):>3}/{len(rows)}   "
              f"({sum(agree[i] for i in literal)}/{len(literal)} literal rows)")
    for name in ("restem lenient", "restem strict", "math-verify bare (defaults)"):
        misses = [i for i, (s, r) in enumerate(zip(results[name], rows)) if s != r.expected]
        print(f"\nmisses of {name} ({len(misses)}):")
        for i in misses:
            r = rows[i]
            extra = " ".join(f"[{k}={v}]" for k, v in r.non_default().items())
            print(f"  #{i:<3} {r.test} expected {int(r.expected)} {extra}\n       gold {_short(r.gold)!r}\n"
                  f"       pred {_short(r.pred)!r}")


if __name__ == "__main__":
    main()
