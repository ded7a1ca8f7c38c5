"""Cut the small real-data slices under tests/data from the full data sets (see README.md here).

Run from the project root: `python tests/data/cut_slices.py [--source ../shared/data]`. Deterministic:
the same full files give byte-identical slices.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
GSM8K_EVERY, GSM8K_TRAIN_EVERY, HUMANEVAL_EVERY = 33, 18, 8
# Rows test_steps.py looks up by content: two real arithmetic slips in model solutions.
GSM8K_SLIPS = ("<<5-3=2.5>>", "25/75 x 100% = 25%")


def _jsonl(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gsm8k_rows(solutions: list[str]) -> list[int]:
    """Every 33rd test question, plus the questions whose model solutions hold the slips."""
    keep = {i for i in range(len(solutions)) if i % GSM8K_EVERY == 0}
    keep |= {i for i, line in enumerate(solutions) if any(s in line for s in GSM8K_SLIPS)}
    return sorted(keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parents[1].parent / "shared" / "data")
    src = parser.parse_args().source
    solutions, test = _jsonl(src / "gsm8k" / "example_model_solutions.jsonl"), _jsonl(src / "gsm8k" / "test.jsonl")
    assert [json.loads(a)["question"] for a in solutions] == [json.loads(b)["question"] for b in test]
    rows = gsm8k_rows(solutions)
    (HERE / "gsm8k").mkdir(exist_ok=True)
    for name, lines in (("example_model_solutions.jsonl", solutions), ("test.jsonl", test)):
        (HERE / "gsm8k" / name).write_text("".join(lines[i] + "\n" for i in rows), encoding="utf-8")
    train = _jsonl(src / "gsm8k" / "train.jsonl")
    train_rows = train[::GSM8K_TRAIN_EVERY]  # the training solutions a small BPE model and tokenizer learn from
    (HERE / "gsm8k" / "train.jsonl").write_text("".join(line + "\n" for line in train_rows), encoding="utf-8")
    with gzip.open(src / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        tasks = [line for line in f.read().splitlines() if line.strip()]
    picked = [line + "\n" for i, line in enumerate(tasks) if i % HUMANEVAL_EVERY == 0]
    (HERE / "humaneval").mkdir(exist_ok=True)
    with open(HERE / "humaneval" / "HumanEval.jsonl.gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
            out.write("".join(picked).encode())
    print(f"gsm8k: {len(rows)} of {len(test)} test questions, {len(train_rows)} of {len(train)} train questions; humaneval: {len(picked)} of {len(tasks)} tasks")


if __name__ == "__main__":
    main()
