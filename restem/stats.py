"""Statistics, each kept once: `auc` serves the reward model's held-out figure (`metrics/reward.json`) and,
registered as a DuckDB function by `restem.query.sql`, the `reward-model` audit and any `restem sql` query;
`pass_at_k` (the unbiased estimator, Chen et al. 2021), `majority_correct` (maj@k) and `summarise` make
Evaluate's metrics; `t_quantile`, `mean_interval` (over seeds) and `bootstrap_interval` (over test problems)
make the intervals of `restem seeds report`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Optional, Sequence


def auc(scores: Sequence[float], labels: Sequence[int | bool]) -> Optional[float]:
    """Area under the ROC curve of `scores` against 0/1 `labels`: the probability that a positive outranks a
    negative, ties counting half (Mann-Whitney U from average ranks). None unless both classes occur.
    Unrounded; callers round for display."""
    if len(scores) != len(labels):
        raise ValueError(f"auc: {len(scores)} scores but {len(labels)} labels")
    pairs = sorted(zip(scores, labels))
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2  # ranks are 1-based; tied scores share their mean rank
        rank_sum += mean_rank * sum(label for _, label in pairs[i:j])
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def auc_of_lists(scores: Optional[list], labels: Optional[list]) -> Optional[float]:
    """`auc` for SQL: `auc(list(score ORDER BY score, label), list(label ORDER BY score, label))` (both lists
    sorted alike, so that each score stays beside its label). Pairs with a NULL are left out; a NULL list
    gives NULL."""
    if scores is None or labels is None:
        return None
    if len(scores) != len(labels):
        raise ValueError(f"auc: {len(scores)} scores but {len(labels)} labels; build both lists in one "
                         "aggregate with the same ORDER BY")
    kept = [(s, bool(y)) for s, y in zip(scores, labels) if s is not None and y is not None]
    return auc([s for s, _ in kept], [y for _, y in kept])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_answer(rows: Sequence[dict]) -> tuple[Optional[str], int]:
    """The most frequent extracted answer of score rows in sample order (ties: the earliest sample's) and how
    many rows give it; (None, 0) when none has one."""
    answers = [r["extracted"] for r in rows if r["extracted"] is not None]
    if not answers:
        return None, 0
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best), best


def majority_correct(rows: Sequence[dict]) -> bool:
    """maj@k: the most frequent extracted answer (ties: the earliest sample) is a correct one."""
    winner, _ = majority_answer(rows)
    return winner is not None and any(r["correct"] for r in rows if r["extracted"] == winner)


def _mean(values: Iterable[float]) -> Optional[float]:
    values = list(values)
    return round(sum(values) / len(values), 6) if values else None


def summarise(problems: Sequence[dict], greedy: dict[str, dict], sampled: dict[str, list[dict]], k: int) -> dict:
    """Metrics over a group of problems, given greedy and sampled score rows by problem_id."""
    ids = [p["problem_id"] for p in problems]
    g_correct = [bool(greedy[i]["correct"]) for i in ids]
    right = [greedy[i] for i in ids if greedy[i]["correct"] and greedy[i]["steps_valid"] is not None]
    sampled_right = [r for i in ids for r in sampled[i] if r["correct"] and r["steps_valid"] is not None]
    return {
        "n": len(ids),
        "pass@1": _mean(map(float, g_correct)),
        "pass@1_sampled": _mean(pass_at_k(k, sum(bool(r["correct"]) for r in sampled[i]), 1) for i in ids),
        f"pass@{k}": _mean(pass_at_k(k, sum(bool(r["correct"]) for r in sampled[i]), k) for i in ids),
        f"maj@{k}": _mean(float(majority_correct(sampled[i])) for i in ids),
        "wrong_steps_rate": _mean(float(r["steps_valid"] is False) for r in right),
        "wrong_steps_rate_sampled": _mean(float(r["steps_valid"] is False) for r in sampled_right),
    }


def pass_rates(samples: Sequence[dict], scores: Sequence[dict]) -> list[dict]:
    """One `PassRate` row (restem.schemas.tables) per problem of an iteration's samples, from their score rows
    (by sample_id). Correctness is the verifier's `correct`, whatever gave the reward; an error or unverifiable
    verdict counts as a failure. The majority answer is majority_correct's: most frequent, ties to the earliest."""
    by_id = {s["sample_id"]: s for s in scores}
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for s in sorted(samples, key=lambda r: (r["problem_id"], r["sample_index"], r["sample_id"])):
        groups.setdefault(s["problem_id"], []).append((s, by_id[s["sample_id"]]))
    rows = []
    for problem_id, pairs in groups.items():
        n = len(pairs)
        winner, top = majority_answer([sc for _, sc in pairs])
        correct = sum(bool(sc["correct"]) for _, sc in pairs)
        rows.append({
            "problem_id": problem_id, "iteration": pairs[0][0]["iteration"], "samples": n,
            "graded": sum(sc["correct"] is not None for _, sc in pairs), "correct": correct,
            "pass_rate": correct / n, "majority_answer": winner, "majority_count": top, "majority_share": top / n,
        })
    return rows
# ---- Intervals over seeds and over test problems (`restem seeds report`) ----
# Student's t from its exact closed form for integer degrees of freedom (no scipy): df is always n - 1.


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer `df` >= 1, from the finite trigonometric series in
    theta = atan(t / sqrt(df)) (Abramowitz & Stegun 26.7.3/26.7.4); exact up to float rounding."""
    if df < 1 or int(df) != df:
        raise ValueError(f"t_cdf: df must be a positive integer, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # A = sin(theta) * (1 + c2/2 + 1*3 c2^2/(2*4) + ... up to c2^((df-2)/2))
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        two_sided = s * total
    else:  # A = (2/pi) * (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ... up to c2^((df-3)/2)))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for j in range(1, (df - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        two_sided = 2 / math.pi * (theta + s * math.cos(theta) * total)
    return 0.5 + math.copysign(two_sided / 2, t)


def t_quantile(p: float, df: int) -> float:
    """The t value with P(T <= t) = p (0 < p < 1), by bisection on `t_cdf` to 1e-12."""
    if not 0 < p < 1:
        raise ValueError(f"t_quantile: p must lie in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_interval(values: Sequence[float], level: float = 0.95, bounds: Optional[tuple[float, float]] = None) -> dict:
    """Mean, spread and the t confidence interval of the mean of `values` (one per seed):
    {n, mean, std (sample, n-1), min, max, ci_low, ci_high}; the interval is null for n < 2. `bounds`: the
    range the quantity cannot leave (a rate: (0, 1); a difference of rates: (-1, 1)); the t interval, symmetric
    by construction, is cut to it (with 3 seeds of 0.03, 0.48, 0.85 it would otherwise reach below 0)."""
    values = [float(v) for v in values]
    n = len(values)
    if not n:
        raise ValueError("mean_interval: no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n) if n > 1 else None
    low, high = (None, None) if half is None else (mean - half, mean + half)
    if bounds is not None and half is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values), "ci_low": low, "ci_high": high}


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default rule)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def bootstrap_interval(columns: dict[str, Sequence[float]], stat, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> dict:
    """Percentile bootstrap over problems: `columns` are per-problem values in one problem order (for a paired
    comparison, e.g. base and iteration correctness side by side), `stat(columns)` a number; every resample
    draws the same problem indices for all columns. Returns {estimate, ci_low, ci_high, resamples, seed}."""
    import random

    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"bootstrap_interval: columns need one common, non-zero length, got {sorted(sizes)}")
    n = sizes.pop()
    rng = random.Random(seed)  # Mersenne Twister: the same draws on every machine and Python 3 version
    draws = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        draws.append(stat({name: [col[i] for i in idx] for name, col in columns.items()}))
    tail = (1 - level) / 2
    return {"estimate": stat(columns), "ci_low": quantile(draws, tail), "ci_high": quantile(draws, 1 - tail),
            "resamples": resamples, "seed": seed}
