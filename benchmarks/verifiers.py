"""Throughput of the verifiers against the simple way of doing the same work, in one run.

Math: our pooled grader (`restem.verifiers.pool.score_pooled`, hard per-sample timeouts, pool start-up
included) against math-verify's `parse` + `verify` called one sample at a time, on
  - GSM8K-style answers: the 5,276 labelled model solutions (`A: 18`), and
  - LaTeX answers: `\\boxed{}` completions built from fractions, surds, powers, pairs, intervals, sets
    and polynomials (no MATH data set is stored here).
Code: HumanEval canonical programs in our sandboxes (all isolation on, one sandbox per worker, start-up
included) against a fresh `python -c` subprocess per program, one after another.

Run: `python benchmarks/verifiers.py` (about a minute on 2 cores); `--only code` or `--only math` for
one half. Prints samples/s and the ratio. Reads the full data sets from `../shared/data` (or `--data`),
else the small slices under `tests/data` (and says so). The pooled graders run with the default answer
extraction (strict).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from restem.verifiers.code_exec import HumanEvalVerifier, Limits, SandboxPool, humaneval_program  # noqa: E402
from restem.verifiers.isolation import isolation_mode  # noqa: E402
from restem.verifiers.pool import score_pooled  # noqa: E402

FULL_DATA, SLICES = ROOT / ".." / "shared" / "data", ROOT / "tests" / "data"
DATA = FULL_DATA if FULL_DATA.is_dir() else SLICES
KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def gsm8k_items() -> list[tuple[str, dict]]:
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").read_text().splitlines()]
    return [(r[k]["solution"], {"reference": r["ground_truth"].rsplit("A:", 1)[1].strip()}) for r in rows for k in KEYS]


def latex_items(n: int, seed: int = 0) -> list[tuple[str, dict]]:
    """(completion, problem) pairs whose answers are varied LaTeX, about half of them equivalent."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        a, b, c = rng.randint(1, 40), rng.randint(2, 40), rng.randint(1, 9)
        kind = rng.randrange(7)
        if kind == 0:
            gold, pred = f"\\frac{{{a}}}{{{b}}}", rng.choice([f"\\frac{{{2 * a}}}{{{2 * b}}}", f"\\frac{{{a + 1}}}{{{b}}}"])
        elif kind == 1:
            gold, pred = f"{c}\\sqrt{{{b}}}", rng.choice([f"\\sqrt{{{c * c * b}}}", f"{c + 1}\\sqrt{{{b}}}"])
        elif kind == 2:
            gold, pred = f"({a},{b})", rng.choice([f"({a}, {b})", f"({b},{a})"])
        elif kind == 3:
            gold, pred = f"[{a},{a + b})", rng.choice([f"[{a}, {a + b})", f"({a},{a + b}]"])
        elif kind == 4:
            gold, pred = f"x^2+{2 * c}x+{c * c}", rng.choice([f"(x+{c})^2", f"(x-{c})^2"])
        elif kind == 5:
            gold, pred = f"\\frac{{{a}\\pi}}{{{b}}}", rng.choice([f"\\frac{{{2 * a}\\pi}}{{{2 * b}}}", f"{a / b:.3f}"])
        else:
            gold, pred = f"{a}^{{{c}}}", rng.choice([str(a ** c), str(a ** c + 1)])
        items.append((f"We compute carefully.\nThe final answer is $\\boxed{{{pred}}}$.", {"reference": gold}))
    return items


def math_verify_sequential(items: list[tuple[str, dict]], latex: bool) -> float:
    """Seconds for math-verify alone, one sample after another, its own default timeouts on."""
    from math_verify import parse, verify

    started = time.perf_counter()
    for completion, problem in items:
        gold = parse(f"${problem['reference']}$" if latex else problem["reference"])
        verify(gold, parse(completion))
    return time.perf_counter() - started


def bench_math(name: str, verifier: str, items: list, workers: int, latex: bool) -> None:
    baseline = math_verify_sequential(items, latex)
    started = time.perf_counter()
    _, stats = score_pooled(verifier, items, workers=workers, timeout_s=10.0)
    ours = time.perf_counter() - started
    print(f"math {name:<8} n={len(items):>5}  math-verify sequential {len(items) / baseline:8.0f}/s   "
          f"pooled ({workers} workers, {stats['timeouts']} timeouts) {len(items) / ours:8.0f}/s   "
          f"ratio {baseline / ours:5.2f}x")


def humaneval_programs(repeat: int) -> list[tuple[str, dict]]:
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    items = [(r["canonical_solution"], {"prompt": r["prompt"], "meta": {"test": r["test"], "entry_point": r["entry_point"]}})
             for r in rows]
    return items * repeat


def naive_sequential(items: list[tuple[str, dict]]) -> tuple[float, int]:
    """Seconds and passes for `python -c program` per program, one after another."""
    started, passed = time.perf_counter(), 0
    for completion, problem in items:
        meta = problem["meta"]
        code = humaneval_program(problem["prompt"], completion, meta["test"], meta["entry_point"])
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=10)
        passed += done.returncode == 0
    return time.perf_counter() - started, passed


def bench_code(items: list, workers: int) -> None:
    baseline, base_passed = naive_sequential(items)
    started = time.perf_counter()
    pool = SandboxPool(workers)
    try:
        verdicts = HumanEvalVerifier(Limits(timeout_s=10.0)).score_batch(items, pool=pool)
    finally:
        pool.close()
    ours = time.perf_counter() - started
    passed = sum(v.verdict == "correct" for v in verdicts)
    print(f"code humaneval n={len(items):>5}  python -c sequential {len(items) / baseline:6.1f}/s ({base_passed} pass)   "
          f"sandboxed [{isolation_mode()}] ({workers} workers) {len(items) / ours:6.1f}/s ({passed} pass)   "
          f"ratio {baseline / ours:5.2f}x")


def main() -> None:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latex", type=int, default=2000, help="number of LaTeX items")
    parser.add_argument("--code-repeat", type=int, default=2, help="times each HumanEval program runs")
    parser.add_argument("--only", choices=["math", "code"], help="run one half only")
    parser.add_argument("--data", type=Path, default=DATA, help=f"folder with gsm8k/ and humaneval/ (default {DATA})")
    args = parser.parse_args()
    DATA = args.data
    print(f"data: {DATA.resolve()}" + ("  (the small slices: figures are indicative only)" if DATA == SLICES else ""))
    if args.only != "code":
        bench_math("gsm8k", "gsm8k", gsm8k_items(), args.workers, latex=False)
        bench_math("latex", "math", latex_items(args.latex), args.workers, latex=True)
    if args.only != "math":
        bench_code(humaneval_programs(args.code_repeat), args.workers)


if __name__ == "__main__":
    main()
