"""The training loop, and supervised fine-tuning with the loss on completion tokens only (used by `base`
and `improve`; the reward model, restem/training/reward.py, trains through the same `train_loop` with its
own objective).

A seeded PyTorch loop run through Hugging Face Accelerate: AdamW, warmup then cosine/linear/constant
schedule, gradient clipping, shuffling from a `torch.Generator`. Same rows, params and seed give the
same weights.

Started as a plain process, it trains on one device, exactly as a plain loop would. Under
`accelerate launch --num_processes N` (or torchrun), every process draws the same global batch from
the same generator and trains on its own contiguous slice of it; the loss of a slice is its summed
token loss over the token count of the whole global batch (times N, since DDP averages gradients), so
the synchronised gradient, and hence the model, is that of the single-process run up to float
rounding. Only the main process should save (`is_main_process`).

Fitting big models: `micro_batch_size` forwards a process's slice in micro-batches and sums their gradients
(gradient accumulation; every micro-batch's loss is over the global batch's token count, so the update is the
one-pass update up to float rounding); `packing` lays a forward's rows end to end in sequences up to the
model's context (restem/training/packing.py); `gradient_checkpointing` recomputes activations in the backward
pass instead of keeping them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from restem.schemas.errors import RestemError

if TYPE_CHECKING:
    import torch

    from restem.schemas.params import PromptParams, TrainParams


def encode_pairs(tokenizer, pairs: Sequence[tuple], max_len: int,
                 spec: "PromptParams | None" = None) -> list[tuple[list[int], int]]:
    """(ids, n_prompt) of each (rendered prompt, completion[, completion_ids]) row, cut to `max_len`: the prompt's
    ids and the sampled completion ids exactly, or (no ids) the completion's tokens + EOS
    (restem/prompting.py: training_ids; `spec` is params `prompt`, None: the plain default)."""
    from restem.prompting import training_ids
    from restem.schemas.params import PromptParams

    spec = spec or PromptParams()
    out = []
    for row in pairs:
        ids, n_prompt = training_ids(tokenizer, spec, row[0], row[2] if len(row) > 2 else None, row[1])
        ids = ids[:max_len]
        out.append((ids, min(n_prompt, len(ids))))
    return out


def pad_right(rows: Sequence[list[int]], pad_id: int):
    """(input_ids, attention_mask) of token-id rows, padded on the right to the longest."""
    import torch

    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def _collate(batch: list[tuple[list[int], int]], pad_id: int):
    """`pad_right` of the rows, and labels: the completion tokens (-100 on the prompt and the padding)."""
    import torch

    input_ids, mask = pad_right([ids for ids, _ in batch], pad_id)
    labels = torch.full(input_ids.shape, -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(batch):
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


def target_count(batch: Sequence[tuple]) -> int:
    """How many tokens of these encoded rows (`(ids, n_prompt, ...)`) carry a loss: every completion token that
    has a preceding token to predict it from (the same tokens `_collate`'s labels mark, after the shift)."""
    return sum(max(0, len(row[0]) - max(row[1], 1)) for row in batch)


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
    # Reward-weighted: each row's token losses times the row's weight (one per row, or one per position of a
    # packed batch, shifted like the labels so that a target token carries its own row's weight).
    per_token = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), shifted.view(-1).to(logits.device),
                                                  ignore_index=-100, reduction="none").view(shifted.shape)
    weights = weights.to(per_token.device)
    if weights.ndim == 2:
        return (per_token * torch.nn.functional.pad(weights, (0, 1))[..., 1:]).sum()
    return (per_token * weights[:, None]).sum()


def process_slice(batch: Sequence, index: int, count: int) -> list:
    """The contiguous part of a global batch that process `index` of `count` trains on."""
    n = len(batch)
    return list(batch[index * n // count : (index + 1) * n // count])


def micro_batches(mine: Sequence, size: int | None, global_size: int, processes: int) -> list[list]:
    """This process's slice `mine` cut into the groups it forwards one at a time: at most `size` rows each (all of
    them in one when `size` is None). Every process makes the same number of groups, the number the largest slice
    of a `global_size` batch needs, since a sharded model (FSDP, ZeRO-3) gathers its weights in every forward and
    the processes must all take part; a group may then be empty."""
    if size is None:
        return [list(mine)]
    count = math.ceil(math.ceil(global_size / processes) / size)
    return [process_slice(mine, j, count) for j in range(count)]


def context_length(model) -> int:
    """The longest input the model takes (its position table; 2048 when its config does not say)."""
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def _enable_checkpointing(model) -> None:
    """Gradient checkpointing on the outermost module that supports it (a wrapper such as the reward model's
    token scorer holds a transformers model); a note when none does."""
    from restem.workspace import log

    for module in model.modules():
        if getattr(module, "supports_gradient_checkpointing", False):
            # Non-reentrant: it needs no input that requires grad (embeddings of a frozen base under LoRA).
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return
    log(f"runtime.gradient_checkpointing: {type(model).__name__} does not support it; training without")


def _disable_checkpointing(model) -> None:
    for module in model.modules():
        if getattr(module, "is_gradient_checkpointing", False):
            module.gradient_checkpointing_disable()


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


class CompletionLoss:
    """SFT's objective for `train_loop`: next-token cross-entropy on the completion tokens of rows
    `(ids, n_prompt, weight)` from `encode_pairs` (weight None: unweighted; else each row's loss times it).
    With `pack_len`, the rows of a forward are packed into sequences of at most that many tokens
    (restem/training/packing.py); the summed loss is the same up to float rounding."""

    def __init__(self, pad_id: int, pack_len: int | None = None):
        self.pad_id, self.pack_len = pad_id, pack_len

    def packed(self, pack_len: int) -> "CompletionLoss":
        return CompletionLoss(self.pad_id, pack_len)

    def count(self, batch: Sequence[tuple]) -> int:
        return target_count(batch)

    def loss_sum(self, model, batch: Sequence[tuple], device) -> "torch.Tensor":
        import torch

        if self.pack_len:
            from restem.training.packing import collate_packed, pack_rows

            input_ids, position_ids, labels, weights = collate_packed(batch, pack_rows(batch, self.pack_len),
                                                                      self.pad_id)
            # No attention mask: the restarting position_ids tell the model where rows begin (see packing.py);
            # no cache, whose presence turns that detection off.
            logits = model(input_ids=input_ids.to(device), position_ids=position_ids.to(device),
                           use_cache=False).logits
            return completion_loss_sum(logits, labels.to(device), weights)
        input_ids, mask, labels = (t.to(device) for t in _collate([row[:2] for row in batch], self.pad_id))
        weights = None if batch[0][2] is None else torch.tensor([row[2] for row in batch], dtype=torch.float32)
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        return completion_loss_sum(logits, labels, weights)


def _summed(accelerator, value: float, processes: int) -> float:
    """`value` summed over the training processes (each holds its share of a global batch's loss)."""
    if processes == 1:
        return value
    import torch

    return float(accelerator.reduce(torch.tensor([value], dtype=torch.float64, device=accelerator.device), "sum")[0])


def train_loop(model, rows: Sequence, params: "TrainParams", objective, replay_rows: Sequence = (),
               log_every: int = 10, precision: str = "auto", *, gradient_checkpointing: bool = False,
               full_state: dict | None = None) -> list[dict]:
    """The one training loop (SFT and the reward model): train `model` in place on encoded `rows`; returns the
    loss log by step.

    `objective` says what a row's loss is: `objective.count(batch)`, the number of loss terms of a global batch
    (the mean's denominator), and `objective.loss_sum(model, rows, device)`, the summed loss of this process's
    rows (the forward included; run under bf16 autocast where `precision` asks for it, see `_autocast`).
    With `params.replay` > 0, that share of every global batch is drawn from `replay_rows` through its own
    shuffled stream. The number of steps is `params.steps`, or `params.epochs` passes over `rows`; with
    `params.loss_target`, training stops at the end of the first epoch whose mean loss is below it (the schedule
    still spans the whole number of steps), and the log's last entry says so (`stop`, `epoch`, `epoch_loss`).

    With `params.micro_batch_size`, a process forwards its rows that many at a time and sums the gradients;
    with `params.packing`, the objective packs each forward's rows (`objective.packed(context length)`);
    `gradient_checkpointing` (runtime.gradient_checkpointing) trades compute for activation memory.
    Under a sharded launch (FSDP, DeepSpeed ZeRO-3) `model` ends up holding only this process's shard: pass a dict
    as `full_state` and the main process finds the gathered full state dict in it, to save (docs/distributed.md).

    Each logged loss is the mean loss of the global batches since the previous entry. Under a multi-process
    launch every process returns the same log and holds the same weights.
    """
    import contextlib

    import torch

    if not rows:
        raise ValueError("train_loop: no rows to train on (its callers say which input was empty)")
    accelerator = _accelerator()
    processes, rank = accelerator.num_processes, accelerator.process_index
    if params.batch_size < processes:
        raise RestemError(f"train batch_size {params.batch_size} is smaller than the {processes} training processes: "
                          "raise batch_size (params: improve.batch_size, base.train.batch_size or "
                          "reward_model.train.batch_size) or launch fewer")
    if accelerator.distributed_type == "DEEPSPEED" and params.micro_batch_size:
        raise RestemError("micro_batch_size is set but the launch uses DeepSpeed, whose engine steps the optimizer "
                          "in every backward: leave micro_batch_size unset (null; the DeepSpeed config's "
                          "gradient_accumulation_steps stays 1), or launch with FSDP (configs/accelerate/fsdp.yaml)")
    if params.packing:
        if not hasattr(objective, "packed"):
            raise RestemError(f"packing: {type(objective).__name__} cannot pack rows (the reward model's objective "
                              "reads every position of a row); set reward_model.train.packing: false")
        objective = objective.packed(context_length(model))
    n_replay = round(params.batch_size * params.replay) if params.replay else 0
    if n_replay and not replay_rows:
        raise RestemError("train replay > 0 but there are no rows to replay; set replay: 0")
    n_main = max(1, params.batch_size - n_replay)
    n = len(rows)
    steps_per_epoch = math.ceil(n / n_main)
    total = params.steps or max(1, round(params.epochs * steps_per_epoch))
    warmup = int(params.warmup_ratio * total)
    gen = torch.Generator().manual_seed(params.seed)
    torch.manual_seed(params.seed)
    home = next(model.parameters()).device
    trained = [p for p in model.parameters() if p.requires_grad]  # a LoRA model trains its adapter only
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=params.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    # Stepped by us once per global batch: a prepared scheduler would step once per process.
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, total, warmup, params.schedule))
    if gradient_checkpointing:
        _enable_checkpointing(model)
    wrapped, optim = accelerator.prepare(model, optim)
    wrapped.train()
    replay_gen = torch.Generator().manual_seed(params.seed + 1)
    log, running, count, order, replay_order = [], 0.0, 0, [], []
    epoch_sum, epoch_steps = 0.0, 0  # for params.loss_target: the mean loss of the epoch so far
    for step in range(total):
        if len(order) < n_main:
            order += torch.randperm(n, generator=gen).tolist()
        idx, order = order[:n_main], order[n_main:]
        batch = [rows[i] for i in idx]
        if n_replay:
            while len(replay_order) < n_replay:
                replay_order += torch.randperm(len(replay_rows), generator=replay_gen).tolist()
            batch += [replay_rows[i] for i in replay_order[:n_replay]]
            replay_order = replay_order[n_replay:]
        targets = max(1, objective.count(batch))
        mine = process_slice(batch, rank, processes)
        optim.zero_grad(set_to_none=True)
        groups = micro_batches(mine, params.micro_batch_size, len(batch), processes)
        batch_loss = 0.0
        for j, group in enumerate(groups):
            # Gradients sync across processes once, in the last group's backward.
            sync = contextlib.nullcontext() if j == len(groups) - 1 else accelerator.no_sync(wrapped)
            with sync:
                with _autocast(precision, accelerator.device):
                    # its share of the global mean; an empty group forwards a row with no weight (see micro_batches)
                    loss = objective.loss_sum(wrapped, group or mine[:1], accelerator.device) / targets
                    if not group:
                        loss = loss * 0.0
                accelerator.backward(loss * processes)
            batch_loss = batch_loss + loss.detach()
        accelerator.clip_grad_norm_(wrapped.parameters(), 1.0)
        optim.step()
        sched.step()
        step_loss = float(batch_loss.detach())  # one device-to-host copy per step
        running, count = running + step_loss, count + 1
        epoch_sum, epoch_steps = epoch_sum + step_loss, epoch_steps + 1
        reached = None  # the epoch's mean loss, when it is below params.loss_target
        if params.loss_target is not None and (step + 1) % steps_per_epoch == 0:
            epoch_mean = _summed(accelerator, epoch_sum, processes) / epoch_steps
            epoch_sum, epoch_steps = 0.0, 0
            if epoch_mean < params.loss_target:
                reached = epoch_mean
        if (step + 1) % log_every == 0 or step == total - 1 or reached is not None:
            running = _summed(accelerator, running, processes)
            log.append({"step": step + 1, "loss": round(running / count, 6), "lr": optim.param_groups[0]["lr"]})
            running, count = 0.0, 0
        if reached is not None:
            log[-1].update(stop="loss_target", epoch=(step + 1) // steps_per_epoch, epoch_loss=round(reached, 6))
            break
    if full_state is not None and accelerator.distributed_type in ("FSDP", "DEEPSPEED"):
        full_state.update(accelerator.get_state_dict(wrapped))  # every process takes part; the main one gets it
    model = accelerator.unwrap_model(wrapped)
    if gradient_checkpointing:
        _disable_checkpointing(model)
    model.eval()
    model.to(home)
    accelerator.wait_for_everyone()
    return log


def train_sft(model, tokenizer, pairs: Sequence[tuple], params: "TrainParams", max_len: int,
              log_every: int = 10, weights: Sequence[float] | None = None,
              replay: Sequence[tuple] = (), precision: str = "auto", spec: "PromptParams | None" = None,
              gradient_checkpointing: bool = False, full_state: dict | None = None) -> list[dict]:
    """Fine-tune `model` in place on (rendered prompt, completion[, completion_ids]) rows with `train_loop`; returns
    the loss log by step. Rows are encoded by `encode_pairs` (the sampled ids exactly where a row has them).

    `weights` (one per pair) turns on the reward-weighted loss. With `params.replay` > 0, that share of
    every global batch is drawn from `replay` (the demonstrations). Each logged loss is the mean token loss.
    """
    if not pairs:
        raise RestemError("no training rows: the kept set is empty (lower the filter's bar or sample more)")
    if weights is not None and len(weights) != len(pairs):
        raise ValueError("one weight per training pair")
    if params.replay and not replay:
        raise RestemError("improve.replay > 0 but there are no demonstrations to replay "
                          "(data/problems/demos.parquet is empty); set improve.replay: 0")
    weighted = weights is not None
    rows = [(ids, n_prompt, weights[i] if weighted else None)
            for i, (ids, n_prompt) in enumerate(encode_pairs(tokenizer, pairs, max_len, spec))]
    replayed = [(ids, n_prompt, 1.0 if weighted else None)
                for ids, n_prompt in (encode_pairs(tokenizer, replay, max_len, spec) if params.replay else [])]
    return train_loop(model, rows, params, CompletionLoss(tokenizer.pad_token_id), replayed, log_every, precision,
                      gradient_checkpointing=gradient_checkpointing, full_state=full_state)
