"""The unbiased pass@k estimator and majority voting."""

import math
import random

import pytest

from restem.stats import majority_correct, pass_at_k


def test_pass_at_k_edges():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 8, 8) == 1.0
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_pass_at_k_equals_the_combinatorial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_is_unbiased_by_simulation():
    rng = random.Random(0)
    p, n, k = 0.2, 10, 4
    estimates = [pass_at_k(n, sum(rng.random() < p for _ in range(n)), k) for _ in range(20000)]
    assert sum(estimates) / len(estimates) == pytest.approx(1 - (1 - p) ** k, abs=0.01)


def _row(answer, correct):
    return {"extracted": answer, "correct": correct}


def test_majority_vote():
    assert majority_correct([_row("5", True), _row("6", False), _row("5", True)])
    assert not majority_correct([_row("6", False), _row("5", True), _row("6", False)])
    assert not majority_correct([_row("6", False), _row("5", True)])  # tie goes to the earliest answer
    assert majority_correct([_row(None, False), _row("5", True)])       # missing answers don't vote
    assert not majority_correct([_row(None, False)])
