"""Sequence packing for training: several encoded rows `(ids, n_prompt, weight)` laid end to end in one
sequence, so that short rows stop paying for padding, with no attention and no prediction across a row
boundary.

Each row's `position_ids` restart at 0 and no attention mask is passed: transformers (Llama, Qwen2,
SmolLM3 and the other models built on `masking_utils.create_causal_mask`) then reads the restarts as
packed sequences and attends only within a row (sdpa and eager build a block-diagonal causal mask;
flash-attention takes the same position_ids as variable-length sequences). The first token of a row is
never a label, so no row is predicted from the one before it. Padding after the last row of a shorter
sequence is its own segment and is never attended to by a real token (attention is causal).
"""

from __future__ import annotations

from typing import Sequence


def pack_rows(rows: Sequence[tuple], capacity: int) -> list[list[int]]:
    """Indices of `rows` per packed sequence: first fit in row order (deterministic: the same rows give the
    same packs), each sequence at most `capacity` tokens; a row longer than that gets a sequence of its own."""
    packs: list[list[int]] = []
    room: list[int] = []
    for i, row in enumerate(rows):
        n = len(row[0])
        for b, free in enumerate(room):
            if n <= free:
                packs[b].append(i)
                room[b] -= n
                break
        else:
            packs.append([i])
            room.append(capacity - n)
    return packs


def collate_packed(rows: Sequence[tuple], packs: Sequence[Sequence[int]], pad_id: int):
    """(input_ids, position_ids, labels, weights) of `rows` laid out as `packs` (from `pack_rows`), padded on
    the right to the longest. Labels are the completion tokens (-100 on prompts, on each row's first token and
    on padding), as `sft._collate` marks them; weights (float, one per position) hold each row's weight, or
    are None when the rows carry none."""
    import torch

    width = max(sum(len(rows[i][0]) for i in pack) for pack in packs)
    input_ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(packs), width), dtype=torch.long)
    labels = torch.full((len(packs), width), -100, dtype=torch.long)
    weighted = len(rows[0]) > 2 and rows[0][2] is not None
    weights = torch.zeros((len(packs), width), dtype=torch.float32) if weighted else None
    for b, pack in enumerate(packs):
        at = 0
        for i in pack:
            ids, n_prompt = rows[i][0], rows[i][1]
            end = at + len(ids)
            input_ids[b, at:end] = torch.tensor(ids)
            position_ids[b, at:end] = torch.arange(len(ids))
            first = max(n_prompt, 1)  # a row's first token has nothing of its own to be predicted from
            labels[b, at + first : end] = torch.tensor(ids[first:], dtype=torch.long)
            if weighted:
                weights[b, at:end] = float(rows[i][2])
            at = end
        position_ids[b, at:] = torch.arange(width - at)  # the padding: a segment of its own
    return input_ids, position_ids, labels, weights


def padding_share(rows: Sequence[tuple], packs: Sequence[Sequence[int]] | None = None) -> float:
    """The share of pad positions in one forward of `rows`: padded to the longest row, or to the longest
    sequence of `packs`."""
    lengths = [len(r[0]) for r in rows]
    if packs is None:
        slots = len(lengths) * max(lengths)
    else:
        slots = len(packs) * max(sum(lengths[i] for i in pack) for pack in packs)
    return 1 - sum(lengths) / slots
