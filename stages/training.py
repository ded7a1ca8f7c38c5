"""Supervised fine-tuning with the loss on completion tokens only (used by `base` and `improve`).

A plain, seeded PyTorch loop: AdamW, warmup then cosine/linear/constant schedule, gradient
clipping, shuffling from a `torch.Generator`. Same rows, params and seed give the same weights.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from schemas.errors import RestemError

if TYPE_CHECKING:
    from schemas.params import TrainParams


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_len: int) -> list[tuple[list[int], int]]:
    """Token ids of prompt + completion + EOS, and the prompt length (tokens not trained on)."""
    prompts = tokenizer([p for p, _ in pairs]).input_ids
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False).input_ids
    out = []
    for p_ids, c_ids in zip(prompts, completions):
        ids = (list(p_ids) + list(c_ids) + [tokenizer.eos_token_id])[:max_len]
        out.append((ids, min(len(p_ids), len(ids))))
    return out


def _collate(batch: list[tuple[list[int], int]], pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, mask, labels


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_sft(model, tokenizer, pairs: Sequence[tuple[str, str]], params: "TrainParams", max_len: int,
              log_every: int = 10) -> list[dict]:
    """Fine-tune `model` in place on (prompt, completion) pairs; returns the loss log by step."""
    import torch

    if not pairs:
        raise RestemError("no training rows: the kept set is empty (lower the filter's bar or sample more)")
    encoded = encode_pairs(tokenizer, pairs, max_len)
    n = len(encoded)
    steps_per_epoch = math.ceil(n / params.batch_size)
    total = max(1, round(params.epochs * steps_per_epoch))
    warmup = int(params.warmup_ratio * total)
    gen = torch.Generator().manual_seed(params.seed)
    torch.manual_seed(params.seed)
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=params.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, total, warmup, params.schedule))
    model.train()
    log, running, count, order = [], 0.0, 0, []
    for step in range(total):
        if len(order) < params.batch_size:
            order += torch.randperm(n, generator=gen).tolist()
        idx, order = order[: params.batch_size], order[params.batch_size :]
        input_ids, mask, labels = _collate([encoded[i] for i in idx], tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        running, count = running + float(loss.detach()), count + 1
        if (step + 1) % log_every == 0 or step == total - 1:
            log.append({"step": step + 1, "loss": round(running / count, 6), "lr": optim.param_groups[0]["lr"]})
            running, count = 0.0, 0
    model.eval()
    return log
