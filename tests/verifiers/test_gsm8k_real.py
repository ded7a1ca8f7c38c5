"""The gsm8k verifier against the 5,276 labelled model solutions of GSM8K's test set (the 168 of the
slice in tests/data where the full set is not beside the project)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import is_slice, real_data
from restem.verifiers.math_answer import GSM8KVerifier

DATA = real_data("gsm8k/example_model_solutions.jsonl")
KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@pytest.mark.parametrize("extraction", ["strict", "lenient"])
def test_agrees_with_is_correct_on_real_solutions(extraction):
    verifier = GSM8KVerifier(extraction=extraction)
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    total, disagreements = 0, []
    for i, row in enumerate(rows):
        for key in KEYS:
            total += 1
            verdict = verifier(row[key]["solution"], {"reference": row["ground_truth"]})
            if verdict.correct != row[key]["is_correct"]:
                disagreements.append((i, key, row[key]["is_correct"], verdict.verdict, verdict.extracted))
    assert total == (168 if is_slice(DATA) else 5276)
    for d in disagreements:
        print("disagreement: row %d %s is_correct=%s ours=%s extracted=%r" % d)
    assert not disagreements, f"{len(disagreements)} disagreements: {disagreements[:20]}"
