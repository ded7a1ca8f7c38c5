"""Stage `improve`: fine-tune on the kept samples, `models/iter<i>`, and the rows it trained on,
`data/iter<i>/train.parquet`.

Starts from `models/iter<init>`: the base model for ReST-EM (init 0), the previous model for a warm
start (original ReST, RAFT, the easy-to-hard curriculum). Trains on the iteration's kept samples; with
`accumulate` also on everything its `prev` model trained on (all kept so far, demonstrations
excepted); with `improve.replay` a share of every batch is demonstrations. A step such as '1b' trains
on its own kept set. The loss is on the completion tokens only: behavioural cloning, or each row
weighted by its reward (`improve.loss: reward_weighted`). `restem.json` records the parent model, a
hash of the training rows and the loss curve.

With `improve.adapter: lora` the model is a LoRA adapter (restem/training/adapters.py): a fresh one on the init
model when that holds whole weights (ReST-EM's "from the base"), or the init model's adapter continued on its
base for a warm start; `models/iter<i>` then holds the adapter and names its base.
"""

from __future__ import annotations

import json
from pathlib import Path

from restem.schemas.hashing import content_hash, derive_seed
from restem.schemas.io import write_rows
from restem.schemas.params import Params
from restem.schemas.tables import Kept
from restem.workspace import iter_dir, log, model_dir
from restem.sampling.engines import set_threads
from restem.training.modeling import load_policy, model_hash, save_policy, stored_dtype
from restem.training.data import demonstration_rows, training_rows
from restem.training.sft import context_length, is_main_process, train_sft



def run(params: Params, iteration: int | str, init: int | str, root: Path = Path(".")) -> dict:
    set_threads(params.runtime.threads)
    rows = training_rows(params, iteration, root)
    trained = fine_tune(params, rows, model_dir(init, root), model_dir(iteration, root), iteration, init, root,
                        label=f"improve@{iteration}")
    if trained is not None:  # the main process (of an `accelerate launch`) writes
        write_rows(iter_dir(iteration, root) / "train.parquet", Kept, rows)
    return {"rows": len(rows), "model_hash": trained}


def fine_tune(params: Params, rows: list[dict], start: Path, out: Path, iteration: int | str, init: int | str,
              root: Path, label: str, salt: tuple = (), sampled_ids: bool = True) -> str | None:
    """Fine-tune the model in `start` on kept `rows` with params `improve` (replay, loss, adapter) and save it to
    `out`; returns its model hash (None on a non-main process of a launch). `salt` makes the shuffle (and a fresh
    adapter) another model's own: the co-improving voters (stages/voters_improve.py) train like the policy with
    their names as salt. `sampled_ids` trains on each row's sampled completion ids (the policy's own samples);
    without, on the text tokenised by this model's tokenizer."""
    p = params.improve
    model, tokenizer, adapter = _start_model(params, start, iteration, root, salt)
    # Kept rows carry the ids they were sampled with (the prompt rendered as they were sampled): trained on exactly.
    pairs = [(r["prompt"], r["completion"], r["completion_ids"]) if sampled_ids else (r["prompt"], r["completion"])
             for r in rows]
    weights = [r["reward"] for r in rows] if p.loss == "reward_weighted" else None
    replay = ([(d.prompt, d.completion) for d in demonstration_rows(root, tokenizer, params.prompt)]
              if p.replay else [])
    # A distinct, reproducible shuffle per iteration (and step, and co-improving voter).
    train = p.model_copy(update={"seed": derive_seed(p.seed, iteration, *salt) % (2**31)})
    max_len = context_length(model)
    if adapter is not None:
        trainable = sum(t.numel() for t in model.parameters() if t.requires_grad)
        log(f"{label}: LoRA adapter on {adapter.base}, {trainable:,} trainable parameters")
    log(f"{label}: {len(pairs)} training rows, starting from {start}"
        + (f", {p.replay:.0%} of each batch replayed from {len(replay)} demonstrations" if replay else "")
        + (", reward-weighted loss" if weights is not None else ""))
    gathered: dict = {}  # the full weights, when a sharded launch (FSDP, ZeRO-3) leaves the model holding a shard
    train_log = train_sft(model, tokenizer, pairs, train, max_len, weights=weights, replay=replay,
                          precision=params.runtime.precision, spec=params.prompt,
                          gradient_checkpointing=params.runtime.gradient_checkpointing, full_state=gathered)
    if not is_main_process():  # under `accelerate launch` every process trains; the main one writes
        return None
    log(f"{label}: loss {train_log[0]['loss']:.3f} -> {train_log[-1]['loss']:.3f}")
    meta = save_policy(model, tokenizer, out, {
        "iteration": iteration,
        "parent": model_hash(start),
        "training_data": content_hash(sorted(r["sample_id"] for r in rows)),
        "params": {"improve": json.loads(p.model_dump_json()), "init": init, "rows": len(pairs),
                   "replayed_demonstrations": len(replay)}
        | ({"salt": list(salt)} if salt else {})
        | ({"lora": json.loads(p.lora.model_dump_json())} if adapter is not None else {}),
        "train_log": train_log,
    } | ({"adapter": adapter} if adapter is not None else {}),
        dtype=None if adapter is not None else stored_dtype(start), state_dict=gathered)
    return meta.model_hash


def _start_model(params: Params, start: Path, iteration: int | str, root: Path, salt: tuple = ()):
    """(model to train, tokenizer, AdapterBase or None). Full fine-tuning starts from the init model's weights (an
    adapter merged in). With adapter lora: a fresh adapter on the init model when it holds whole weights, else the
    init model's adapter, trainable, on its base."""
    p = params.improve
    if p.adapter == "none":
        return (*load_policy(start), None)
    from restem.training.adapters import adapter_base, adapter_meta, attach, check_shape, fresh_adapter, is_adapter
    from restem.training.modeling import read_meta

    if is_adapter(start):
        check_shape(start, p.lora)
        base = adapter_base(start, read_meta(start))
        model, tokenizer = load_policy(base)
        return attach(model, start, trainable=True), tokenizer, adapter_meta(base, root)
    model, tokenizer = load_policy(start)
    model = fresh_adapter(model, p.lora, derive_seed(p.seed, "lora", iteration, *salt) % (2**31))
    return model, tokenizer, adapter_meta(start, root)


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("improve")
