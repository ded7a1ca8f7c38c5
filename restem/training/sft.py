"""Supervised fine-tuning with the loss on completion tokens only (used by `base` and `improve`).

A seeded PyTorch loop run through Hugging Face Accelerate: AdamW, warmup then cosine/linear/constant
schedule, gradient clipping, shuffling from a `torch.Generator`. Same rows, params and seed give the
same weights.

Started as a plain process, it trains on one device, exactly as a plain loop would. Under
`accelerate launch --num_processes N` (or torchrun), every process draws the same global batch from
the same generator and trains on its own contiguous slice of it; the loss of a slice is its summed
token loss over the token count of the whole global batch (times N, since DDP averages gradients), so
the synchronised gradient, and hence the model, is that of the single-process run up to float
rounding. Only the main process should save (`is_main_process`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from restem.schemas.errors import RestemError

if TYPE_CHECKING:
    from restem.schemas.params import TrainParams


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


def target_count(batch: Sequence[tuple[list[int], int]]) -> int:
    """How many tokens of these encoded rows carry a loss: every completion token that has a
    preceding token to predict it from (the same tokens `_collate`'s labels mark, after the shift)."""
    return sum(max(0, len(ids) - max(n_prompt, 1)) for ids, n_prompt in batch)


def completion_loss_sum(logits, labels, weights=None):
    """Summed next-token cross-entropy over the labelled positions (labels -100 are ignored).

    Same layout as transformers' causal-LM loss (labels shifted left by padding one column, logits
    upcast to float32), so that dividing by the token count reproduces `model(..., labels=...).loss`
    bit for bit.
    """
    import torch

    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].contiguous()
    logits = logits.float()
    if weights is None:
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]),
                                                 shifted.view(-1).to(logits.device), ignore_index=-100, reduction="sum")
    # Reward-weighted: each row's token losses times the row's weight.
    per_token = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), shifted.view(-1).to(logits.device),
                                                  ignore_index=-100, reduction="none").view(shifted.shape)
    return (per_token * weights.to(per_token.device)[:, None]).sum()


def process_slice(batch: Sequence, index: int, count: int) -> list:
    """The contiguous part of a global batch that process `index` of `count` trains on."""
    n = len(batch)
    return list(batch[index * n // count : (index + 1) * n // count])


def _launched_processes() -> int:
    """How many processes a distributed launcher (torchrun, `accelerate launch`) started; 1 if none."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _cpu_only() -> bool:
    """Launched as several processes on a machine without a GPU. Accelerate then needs to be told to
    use the CPU (gloo backend); otherwise it sees no device to distribute over and each process would
    train alone on the whole data."""
    import torch

    return _launched_processes() > 1 and not torch.cuda.is_available()


def _mixed_precision(precision: str) -> str:
    """bf16 autocast where the engine would run in bfloat16 on a CUDA GPU (`device_and_dtype`: precision auto
    or bfloat16 there); full float32 otherwise."""
    from restem.sampling.engines import device_and_dtype

    return "bf16" if device_and_dtype(precision) == ("cuda", "bfloat16") else "no"


def _autocast(precision: str, device: "torch.device"):
    """The forward's and loss's context: bf16 autocast on a CUDA GPU (see `_mixed_precision`), else none.

    Ours rather than Accelerate's `mixed_precision`, which lives in a process-wide singleton: a second
    `train_sft` in the same process with another precision (base in float32, then Improve in bf16) would
    make Accelerate refuse to start."""
    import contextlib

    import torch

    if _mixed_precision(precision) == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _accelerator():
    """An `accelerate.Accelerator` configured by `accelerate launch` (or torchrun) when started by
    one, else a single process on the default device (a CUDA GPU when there is one)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=_cpu_only())
    if accelerator.num_processes != _launched_processes():
        raise RestemError(f"launched as {_launched_processes()} processes but Accelerate set up "
                          f"{accelerator.num_processes} ({accelerator.distributed_type}); on CPUs launch with "
                          "`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`")
    return accelerator


def is_main_process() -> bool:
    """Whether this is the process that writes outputs (always true when not launched distributed)."""
    from accelerate import PartialState

    return PartialState(cpu=_cpu_only()).is_main_process


def train_sft(model, tokenizer, pairs: Sequence[tuple[str, str]], params: "TrainParams", max_len: int,
              log_every: int = 10, weights: Sequence[float] | None = None,
              replay: Sequence[tuple[str, str]] = (), precision: str = "auto") -> list[dict]:
    """Fine-tune `model` in place on (prompt, completion) pairs; returns the loss log by step.

    `weights` (one per pair) turns on the reward-weighted loss. With `params.replay` > 0, that share of
    every global batch is drawn from `replay` (the demonstrations) through its own shuffled stream.
    The number of steps is `params.steps`, or `params.epochs` passes over `pairs`.

    Each logged loss is the mean token loss of the global batches since the previous entry. Under a
    multi-process launch every process returns the same log and holds the same weights.
    """
    import torch

    if not pairs:
        raise RestemError("no training rows: the kept set is empty (lower the filter's bar or sample more)")
    accelerator = _accelerator()
    processes, rank = accelerator.num_processes, accelerator.process_index
    if params.batch_size < processes:
        raise RestemError(f"train batch_size {params.batch_size} is smaller than the {processes} training processes: "
                          "raise batch_size (params: improve.batch_size or base.train.batch_size) or launch fewer")
    if weights is not None and len(weights) != len(pairs):
        raise ValueError("one weight per training pair")
    if params.replay and not replay:
        raise RestemError("improve.replay > 0 but there are no demonstrations to replay "
                          "(data/problems/demos.parquet is empty); set improve.replay: 0")
    encoded = encode_pairs(tokenizer, pairs, max_len)
    replayed = encode_pairs(tokenizer, replay, max_len) if params.replay else []
    n_replay = round(params.batch_size * params.replay) if params.replay else 0
    n_main = max(1, params.batch_size - n_replay)
    n = len(encoded)
    steps_per_epoch = math.ceil(n / n_main)
    total = params.steps or max(1, round(params.epochs * steps_per_epoch))
    warmup = int(params.warmup_ratio * total)
    gen = torch.Generator().manual_seed(params.seed)
    torch.manual_seed(params.seed)
    home = next(model.parameters()).device
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=params.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    # Stepped by us once per global batch: a prepared scheduler would step once per process.
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, total, warmup, params.schedule))
    wrapped, optim = accelerator.prepare(model, optim)
    wrapped.train()
    replay_gen = torch.Generator().manual_seed(params.seed + 1)
    log, running, count, order, replay_order = [], 0.0, 0, [], []
    for step in range(total):
        if len(order) < n_main:
            order += torch.randperm(n, generator=gen).tolist()
        idx, order = order[:n_main], order[n_main:]
        batch = [encoded[i] for i in idx]
        row_weights = [weights[i] for i in idx] if weights is not None else None
        if n_replay:
            while len(replay_order) < n_replay:
                replay_order += torch.randperm(len(replayed), generator=replay_gen).tolist()
            batch += [replayed[i] for i in replay_order[:n_replay]]
            replay_order = replay_order[n_replay:]
            row_weights = row_weights + [1.0] * n_replay if row_weights is not None else None
        targets = max(1, target_count(batch))
        input_ids, mask, labels = (t.to(accelerator.device) for t in
                                   _collate(process_slice(batch, rank, processes), tokenizer.pad_token_id))
        slice_weights = (torch.tensor(process_slice(row_weights, rank, processes), dtype=torch.float32)
                         if row_weights is not None else None)
        with _autocast(precision, accelerator.device):
            logits = wrapped(input_ids=input_ids, attention_mask=mask).logits
            # this slice's share of the global mean
            batch_loss = completion_loss_sum(logits, labels, slice_weights) / targets
        optim.zero_grad(set_to_none=True)
        accelerator.backward(batch_loss * processes)
        accelerator.clip_grad_norm_(wrapped.parameters(), 1.0)
        optim.step()
        sched.step()
        running, count = running + float(batch_loss.detach()), count + 1
        if (step + 1) % log_every == 0 or step == total - 1:
            if processes > 1:
                running = float(accelerator.reduce(torch.tensor([running], dtype=torch.float64,
                                                                device=accelerator.device), "sum")[0])
            log.append({"step": step + 1, "loss": round(running / count, 6), "lr": optim.param_groups[0]["lr"]})
            running, count = 0.0, 0
    model = accelerator.unwrap_model(wrapped)
    model.eval()
    model.to(home)
    accelerator.wait_for_everyone()
    return log
