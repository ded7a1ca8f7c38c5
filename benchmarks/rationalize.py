"""Rationalization (STaR) on the embedded task, reduced default config: what hints add to one iteration.

    python benchmarks/rationalize.py --out /tmp/rat              # about 20 minutes on 2 busy cores
    python benchmarks/rationalize.py --out /tmp/rat0 --hint-demos 0 --templates-only

Config: params.yaml as committed, except problems.arithmetic.train_count 300 (Grow pool, 3-digit), test_count
100 (per test set), one iteration, rationalize.hint_demos from --hint-demos, and in the two loop arms
improve.steps from --steps (the same training length with and without the extra rows; 4 epochs of ~211 rows
are 28 steps, too few at lr 1e-3: both arms then fell below the base). Steps: problems, base, grow@1, score@1;
then each hint template (and a no-hint control, `{prompt}`) on the unsolved problems; then filter, improve and
evaluate without and with rationalization, from the same base and Grow samples.

Measured (2 shared CPU cores, 2026-12-02), base trained with hint_demos 0.25 (800 rows: 640 demos + 160 hinted):
  grow@1 solved 202 of 300 problems; 98 unsolved, 4 hinted samples each (392):
    no hint `{prompt}`:            11 correct on 10 problems, 0 of them with a wrong step
    hint `{reference};{prompt}`:   16 correct on 12 problems, 4 of them with a wrong step
  kept: 211 ordinary rows (202 problems) + 12 rationalized rows on 12 more problems (3 with a wrong step)
  restem audit wrong-reasoning: grow 15 of 770 right answers with a wrong step (0.0195; kept 14/211, 0.066),
    rationale 4 of 16 (0.25; kept 3/12)
  test pass@1 greedy in_dist (100 problems), base 0.49: without 0.75, with 0.76; sampled pass@1 0.606 vs 0.641;
    pass@8 0.83 vs 0.85; harder (4-digit) 0 in both
Base trained WITHOUT hinted demos (hint_demos 0; 204 of 300 unsolved, 4 samples each): no hint 19 correct on 17
problems; `{reference};{prompt}` 0; `{reference}\\n{prompt}` 0; `(The answer is {reference}.) {prompt}` 0;
`{prompt}(The answer is {reference}.)` 1: a model that never saw a hint is thrown off by one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TEMPLATES = ["{prompt}", "{reference};{prompt}", "{reference}\n{prompt}", "(The answer is {reference}.) {prompt}",
             "{prompt}(The answer is {reference}.)"]


def with_rationalize(params, **update):
    return params.model_copy(update={"rationalize": params.rationalize.model_copy(update=update)})


def templates(params, root: Path, hints: list[str]) -> None:
    """Each hint on iteration 1's unsolved problems (the control `{prompt}` bypasses the params check on purpose)."""
    from restem.rationalize import unsolved
    from restem.schemas.io import read_rows
    from restem.schemas.tables import Sample, Score
    from restem.stages import rationalize
    from restem.workspace import RATIONALE_SCORES, iter_dir

    todo = unsolved(read_rows(iter_dir(1, root) / "samples.parquet", Sample),
                    read_rows(iter_dir(1, root) / "scores.parquet", Score))
    print(f"unsolved after grow@1: {len(todo)}", flush=True)
    for hint in hints:
        rationalize.run(with_rationalize(params, hint=hint, enabled=True), 1, 0, root)
        right = [s for s in read_rows(iter_dir(1, root) / RATIONALE_SCORES, Score) if s["correct"]]
        print(json.dumps({"hint": hint, "correct": len(right), "problems": len({s["problem_id"] for s in right}),
                          "wrong_steps": sum(1 for s in right if s["steps_valid"] is False)}), flush=True)


def arms(params, root: Path, hint: str, steps: int) -> None:
    """filter, improve, evaluate without and with rationalization, each in a copy of the workspace."""
    from restem.stages import evaluate, filter as filter_stage, improve, rationalize

    params = params.model_copy(update={"improve": params.improve.model_copy(update={"steps": steps})})
    for name, on in (("without", False), ("with", True)):
        ws = root.parent / f"{root.name}_{name}"
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(root, ws, ignore=shutil.ignore_patterns("rationale*.parquet"))
        p = with_rationalize(params, hint=hint, enabled=on)
        rationalize.run(p, 1, 0, ws)
        filter_stage.run(p, 1, ws)
        improve.run(p, 1, 0, ws)
        evaluate.run(p, ws)
        print(json.dumps({"arm": name, "filter": json.loads((ws / "metrics/filter/iter1.json").read_text()),
                          "test": json.loads((ws / "metrics/iterations/iter1.json").read_text()).get("test")}),
              flush=True)
        print(f"audit: restem audit wrong-reasoning --root {ws}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="workspace folder (the arms go beside it)")
    ap.add_argument("--hint-demos", type=float, default=0.25)
    ap.add_argument("--hint", default="{reference};{prompt}", help="the template of the two arms")
    ap.add_argument("--steps", type=int, default=120, help="improve.steps in both arms")
    ap.add_argument("--templates-only", action="store_true")
    args = ap.parse_args()
    from restem.schemas.params import Params
    from restem.stages import base, grow, problems, score

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["problems"]["arithmetic"].update(train_count=300, test_count=100)
    raw["loop"]["iterations"] = {"1": {"prev": 0, "init": 0}}
    raw["rationalize"].update(hint_demos=args.hint_demos, hint=args.hint)
    params = Params.model_validate(raw)
    root = args.out
    if not (root / "data/iter1/scores.parquet").exists():
        root.mkdir(parents=True, exist_ok=True)
        problems.run(params, root)
        base.run(params, root)
        grow.run(params, 1, 0, root)
        score.run(params, 1, root)
    templates(params, root, TEMPLATES if args.hint_demos == 0 else ["{prompt}", args.hint])
    if not args.templates_only:
        arms(params, root, args.hint, args.steps)


if __name__ == "__main__":
    main()
