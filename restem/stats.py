"""Statistics computed in more than one place, kept here once: `auc` serves the reward model's held-out
figure (`metrics/reward.json`) and, registered as a DuckDB function by `restem.query.sql`, the `reward-model`
audit and any `restem sql` query.
"""

from __future__ import annotations

from typing import Optional, Sequence


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
