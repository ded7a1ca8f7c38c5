"""Stage `reward_model`: a learned outcome reward model, `models/reward`, its training data,
`data/reward/{samples,scores}.parquet`, and how well it agrees with the verifier on held-out
problems, `metrics/reward.json`.

Used when `score.reward` is `model` (the original ReST scores samples with a learned reward model
instead of a verifier). Either `reward_model.checkpoint` names a local Hugging Face
sequence-classification checkpoint (the folder then only records it), or a small one is trained here
so that the embedded default works offline: the base model samples the Grow pool, the verifier labels
each sample, and a sequence classifier initialised from the base model learns P(correct | prompt,
completion) with binary cross-entropy. Problems are split into train and held-out sets, so its
accuracy and AUC on unseen problems are measured, not assumed.

With `score.reward: verifier` the stage only writes markers saying it is unused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash, folder_hash
from restem.schemas.io import atomic_dir, read_rows, write_json, write_rows
from restem.schemas.params import Params, RewardModelParams
from restem.schemas.tables import ModelMeta, Problem, Sample, Score
from restem.workspace import DATA, METRICS, MODELS, log, model_dir, problems_dir, user_input
from restem.sampling.engines import SamplingParams, set_threads
from restem.training.modeling import META_FILE, model_hash, resolve_checkpoint
from restem.stats import auc

if TYPE_CHECKING:
    import torch

REWARD = "reward"


def reward_dir(root: Path = Path(".")) -> Path:
    return root / MODELS / REWARD


def data_dir(root: Path = Path(".")) -> Path:
    return root / DATA / REWARD


def _write_unused(root: Path, why: str) -> None:
    for folder in (reward_dir(root), data_dir(root)):
        with atomic_dir(folder) as tmp:
            write_json(tmp / "unused.json", {"unused": True, "why": why})
    write_json(root / METRICS / "reward.json", {"used": False})


def _pick_problems(problems: list[dict], count: int, seed: int) -> list[dict]:
    ranked = sorted(problems, key=lambda p: content_hash("reward-pick", seed, p["problem_id"]))
    return sorted(ranked[:count], key=lambda p: p["problem_id"])


def _is_holdout(problem_id: str, seed: int, share: float) -> bool:
    return int(content_hash("reward-holdout", seed, problem_id)[:8], 16) / 16**8 < share


def _collate(batch: Sequence[list[int]], pad_id: int):
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):  # right padding: the classifier reads the last real token
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def _encode(tokenizer, texts: Sequence[tuple[str, str]], max_len: int) -> list[list[int]]:
    from restem.training.sft import encode_pairs

    return [ids for ids, _ in encode_pairs(tokenizer, texts, max_len)]


def _logits(model, batch_ids: Sequence[list[int]], pad_id: int) -> "torch.Tensor":
    input_ids, mask = _collate(batch_ids, pad_id)
    logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
    if logits.shape[-1] == 1:
        return logits[:, 0]
    # A two-class classifier: the log-odds of class 1 ("good").
    return logits[:, 1] - logits[:, 0]


def _token_logits(model, batch: Sequence[tuple[list[int], int]], pad_id: int):
    """The classifier's logit at every position, and a mask of the completion positions."""
    import torch

    input_ids, mask = _collate([ids for ids, _ in batch], pad_id)
    hidden = model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    logits = model.score(hidden).float()
    logits = logits[..., 0] if logits.shape[-1] == 1 else logits[..., 1] - logits[..., 0]
    completion = torch.zeros_like(mask, dtype=torch.bool)
    for row, (ids, n_prompt) in enumerate(batch):
        completion[row, max(n_prompt - 1, 0) : len(ids)] = True
    return logits, completion


def train_reward_model(model, tokenizer, rows: Sequence[tuple[str, str, float]], train, max_len: int) -> list[dict]:
    """Class-balanced binary cross-entropy on (prompt, completion, label) rows; returns the loss log by step."""
    import torch

    from restem.training.sft import _lr_factor

    if not rows:
        raise RestemError("reward_model: no labelled samples to train on")
    from restem.training.sft import encode_pairs

    encoded = encode_pairs(tokenizer, [(p, c) for p, c, _ in rows], max_len)
    labels = [y for _, _, y in rows]
    n = len(encoded)
    positives = sum(labels)
    # Right answers are rare early on; weigh the classes equally so the model cannot win by always saying no.
    pos_weight = torch.tensor((n - positives) / positives if 0 < positives < n else 1.0)
    total = train.steps or max(1, round(train.epochs * math.ceil(n / train.batch_size)))
    warmup = int(train.warmup_ratio * total)
    gen = torch.Generator().manual_seed(train.seed)
    torch.manual_seed(train.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, total, warmup, train.schedule))
    model.train()
    log_rows, running, count, order = [], 0.0, 0, []
    for step in range(total):
        if len(order) < train.batch_size:
            order += torch.randperm(n, generator=gen).tolist()
        idx, order = order[: train.batch_size], order[train.batch_size :]
        # Every completion position predicts the final verdict (Cobbe et al. 2021's outcome verifier):
        # far more signal per sample than the last token alone; scoring reads the last token.
        logits, where = _token_logits(model, [encoded[i] for i in idx], tokenizer.pad_token_id)
        target = torch.tensor([labels[i] for i in idx], dtype=torch.float32)[:, None].expand_as(logits)
        per_token = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight,
                                                                         reduction="none")
        loss = (per_token * where).sum() / where.sum()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        running, count = running + float(loss.detach()), count + 1
        if (step + 1) % 10 == 0 or step == total - 1:
            log_rows.append({"step": step + 1, "loss": round(running / count, 6)})
            running, count = 0.0, 0
    model.eval()
    return log_rows


def predict(model, tokenizer, pairs: Sequence[tuple[str, str]], max_len: int, batch_size: int = 256) -> list[float]:
    """P(good) for each (prompt, completion), rounded to 6 decimals; batched by length, so the result
    does not depend on the order of `pairs`."""
    import torch

    encoded = _encode(tokenizer, pairs, max_len)
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), encoded[i]))
    out = [0.0] * len(encoded)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            probs = torch.sigmoid(_logits(model, [encoded[i] for i in idx], tokenizer.pad_token_id)).tolist()
            for i, p in zip(idx, probs):
                out[i] = round(float(p), 6)
    return out


def load_reward_model(folder: Path):
    """(model, tokenizer, hash) of a reward model folder (or the checkpoint it stands for)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (Path(folder) / "unused.json").exists():
        raise RestemError(f"{folder}: no reward model was built (params: score.reward must be `model` "
                          "when the reward_model stage runs); run `dvc repro`")
    path = resolve_checkpoint(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise RestemError(f"{path}: not a loadable Hugging Face sequence-classification checkpoint ({exc}); "
                          "params: reward_model.checkpoint") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer, model_hash(folder)


def _max_len(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def score_with_model(folder: Path, samples: Sequence[dict], batch_size: int = 256) -> tuple[list[float], str]:
    """Reward-model scores for sample rows, in order, and the reward model's hash."""
    model, tokenizer, rm_hash = load_reward_model(folder)
    rewards = predict(model, tokenizer, [(s["prompt"], s["completion"]) for s in samples], _max_len(model), batch_size)
    return rewards, rm_hash


def _link(checkpoint: str, root: Path) -> ModelMeta:
    path = Path(checkpoint).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise RestemError(f"{path}: not a Hugging Face checkpoint folder (no config.json); "
                          "params: reward_model.checkpoint must name a local sequence-classification folder")
    meta = ModelMeta(model_hash=folder_hash(path), iteration=REWARD, checkpoint=str(path))
    with atomic_dir(reward_dir(root)) as tmp:
        write_json(tmp / META_FILE, json.loads(meta.model_dump_json()))
    with atomic_dir(data_dir(root)) as tmp:
        write_json(tmp / "unused.json", {"unused": True, "why": "reward_model.checkpoint is given"})
    return meta


def run(params: Params, root: Path = Path(".")) -> dict:
    if params.score.reward != "model":
        _write_unused(root, "score.reward is `verifier`")
        log("reward_model: not used (score.reward is `verifier`)")
        return {"used": False}
    rm: RewardModelParams = params.reward_model  # present: params validation checks it
    if rm.checkpoint:
        meta = _link(str(user_input(rm.checkpoint, "reward_model", "reward_model.checkpoint", root)), root)
        summary = {"used": True, "checkpoint": meta.checkpoint, "model": meta.model_hash}
        write_json(root / METRICS / "reward.json", summary)
        log(f"reward_model: using checkpoint {meta.checkpoint}")
        return summary
    from restem.sampling import sampler
    from restem.verifiers import batch
    from restem.training.modeling import load_policy

    set_threads(params.runtime.threads)
    problems = _pick_problems(read_rows(problems_dir(root) / "train.parquet", Problem), rm.problems, rm.seed)
    base = model_dir(0, root)
    policy = model_hash(base)
    engine = sampler.make_engine(params.grow.engine, base, params.runtime.batch_size, params.runtime)
    samples = sampler.sample(engine, problems, rm.samples_per_problem,
                          SamplingParams(rm.temperature, rm.max_new_tokens), rm.seed, 0, "reward", policy,
                          label="reward_model: sampling")
    del engine
    sample_rows = [s.model_dump() for s in samples]
    views = {p["problem_id"]: batch.problem_view(p) for p in problems}
    scores = batch.score_samples(params.score.verifier, sample_rows, views, params.runtime.workers,
                                 params.score.timeout_s, extraction=params.score.extraction)
    labelled = [(s, sc) for s, sc in zip(sample_rows, scores) if sc.correct is not None]
    train_rows = [(s["prompt"], s["completion"], float(sc.correct)) for s, sc in labelled
                  if not _is_holdout(s["problem_id"], rm.seed, rm.holdout)]
    held = [(s, sc) for s, sc in labelled if _is_holdout(s["problem_id"], rm.seed, rm.holdout)]

    from transformers import AutoModelForSequenceClassification

    _, tokenizer = load_policy(base)
    start = resolve_checkpoint(base)
    import torch

    torch.manual_seed(rm.train.seed)  # the new classification head
    model = AutoModelForSequenceClassification.from_pretrained(start, local_files_only=True, num_labels=1,
                                                               dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    max_len = _max_len(model)
    positives = sum(y for _, _, y in train_rows)
    log(f"reward_model: training on {len(train_rows)} labelled samples ({positives:.0f} correct), "
        f"holding out {len(held)}")
    train_log = train_reward_model(model, tokenizer, train_rows, rm.train, max_len)
    probs = predict(model, tokenizer, [(s["prompt"], s["completion"]) for s, _ in held], max_len,
                    params.runtime.batch_size)
    labels = [int(sc.correct) for _, sc in held]
    accuracy = round(sum((p >= 0.5) == bool(y) for p, y in zip(probs, labels)) / len(labels), 6) if labels else None
    with atomic_dir(reward_dir(root)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = ModelMeta(model_hash=folder_hash(tmp), iteration=REWARD, parent=policy,
                         training_data=content_hash(sorted(s["sample_id"] for s, _ in labelled)),
                         params=json.loads(rm.model_dump_json()), train_log=train_log)
        write_json(tmp / META_FILE, json.loads(meta.model_dump_json()))
    with atomic_dir(data_dir(root)) as tmp:
        write_rows(tmp / "samples.parquet", Sample, samples)
        write_rows(tmp / "scores.parquet", Score, scores)
    summary = {
        "used": True, "model": meta.model_hash, "samples": len(labelled), "train_samples": len(train_rows),
        "holdout_samples": len(held), "train_positive_rate": round(positives / max(1, len(train_rows)), 6),
        "loss_first": train_log[0]["loss"], "loss_last": train_log[-1]["loss"],
        "holdout_accuracy": accuracy,
        "holdout_majority_baseline": round(max(sum(labels), len(labels) - sum(labels)) / len(labels), 6)
        if labels else None,
        "holdout_auc": None if (area := auc(probs, labels)) is None else round(area, 6),
    }
    write_json(root / METRICS / "reward.json", summary)
    log(f"reward_model: loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f}; held-out accuracy "
        f"{accuracy} (majority baseline {summary['holdout_majority_baseline']}), AUC {summary['holdout_auc']}")
    return summary


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("reward_model")
