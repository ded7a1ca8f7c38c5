"""A learned outcome reward model: a sequence classifier that reads (prompt, completion) and gives
P(correct), as the original ReST scores samples with (`score.reward: model`).

A small one is initialised from the base policy (a new one-logit head) and trained through the one
training loop (`restem.training.sft.train_loop`) with class-balanced binary cross-entropy: every
completion position predicts the sample's final verdict (Cobbe et al. 2021's outcome verifier: far more
signal per sample than the last token alone); scoring reads the last token, as the classifier's own
forward does. Problems are split into train and held-out sets by a seeded hash, so its accuracy and
AUC on unseen problems are measured, not assumed. A user's own checkpoint is any local Hugging Face
sequence-classification folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.stats import auc
from restem.training.modeling import model_hash, resolve_checkpoint
from restem.training.sft import context_length, encode_pairs, pad_right, train_loop

if TYPE_CHECKING:
    import torch

    from restem.schemas.params import TrainParams

REWARD = "reward"  # the `iteration` a reward model's restem.json records


def pick_problems(problems: list[dict], count: int, seed: int) -> list[dict]:
    """`count` problems chosen by a seeded hash (the same whatever the order of `problems`), in problem order."""
    ranked = sorted(problems, key=lambda p: content_hash("reward-pick", seed, p["problem_id"]))
    return sorted(ranked[:count], key=lambda p: p["problem_id"])


def is_holdout(problem_id: str, seed: int, share: float) -> bool:
    """Whether a problem is held out to measure the reward model (about `share` of them)."""
    return int(content_hash("reward-holdout", seed, problem_id)[:8], 16) / 16**8 < share


def split_labelled(samples: Sequence[dict], scores: Sequence, seed: int, share: float):
    """The verifier-labelled (sample, score) pairs, the training rows (prompt, completion, label) of the problems
    not held out, and the held-out pairs."""
    labelled = [(s, sc) for s, sc in zip(samples, scores) if sc.correct is not None]
    train_rows = [(s["prompt"], s["completion"], float(sc.correct)) for s, sc in labelled
                  if not is_holdout(s["problem_id"], seed, share)]
    held = [(s, sc) for s, sc in labelled if is_holdout(s["problem_id"], seed, share)]
    return labelled, train_rows, held


def _logits(model, batch_ids: Sequence[list[int]], pad_id: int) -> "torch.Tensor":
    """The classifier's log-odds of "good" at each row's last real token (its own pooling)."""
    input_ids, mask = pad_right(batch_ids, pad_id)  # right padding: the classifier reads the last real token
    logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
    if logits.shape[-1] == 1:
        return logits[:, 0]
    # A two-class classifier: the log-odds of class 1 ("good").
    return logits[:, 1] - logits[:, 0]


def _token_scorer(classifier):
    """A module whose forward is the classifier's head at every position (not only the last): what the
    training objective needs, as a module of its own so that Accelerate (DDP) wraps the whole forward."""
    import torch

    class TokenScorer(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.classifier = inner

        def forward(self, input_ids, attention_mask):
            hidden = self.classifier.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.classifier.score(hidden)

    return TokenScorer(classifier)


class VerdictLoss:
    """The reward model's objective for `train_loop`: rows `(ids, n_prompt, label)`; each completion position's
    logit against the row's label, binary cross-entropy with the positives weighted by `pos_weight`."""

    def __init__(self, pad_id: int, pos_weight: float):
        self.pad_id, self.pos_weight = pad_id, pos_weight

    def count(self, batch: Sequence[tuple]) -> int:
        """The completion positions: from the prompt's last token (it predicts the first completion token) on."""
        return sum(len(ids) - max(n_prompt - 1, 0) for ids, n_prompt, _ in batch)

    def loss_sum(self, model, batch: Sequence[tuple], device) -> "torch.Tensor":
        import torch

        input_ids, mask = (t.to(device) for t in pad_right([ids for ids, _, _ in batch], self.pad_id))
        logits = model(input_ids=input_ids, attention_mask=mask).float()
        logits = logits[..., 0] if logits.shape[-1] == 1 else logits[..., 1] - logits[..., 0]
        where = torch.zeros_like(mask, dtype=torch.bool)
        for row, (ids, n_prompt, _) in enumerate(batch):
            where[row, max(n_prompt - 1, 0) : len(ids)] = True
        target = torch.tensor([y for _, _, y in batch], dtype=torch.float32, device=device)[:, None].expand_as(logits)
        per_token = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, pos_weight=torch.tensor(self.pos_weight, device=device), reduction="none")
        return (per_token * where).sum()


def train_reward_model(model, tokenizer, rows: Sequence[tuple[str, str, float]], train: "TrainParams", max_len: int,
                       precision: str = "auto") -> list[dict]:
    """Train a sequence classifier in place on (prompt, completion, label) rows; returns the loss log by step."""
    if not rows:
        raise RestemError("reward_model: no labelled samples to train on")
    if train.replay or train.loss != "bc":
        raise RestemError("reward_model.train: replay must be 0 and loss `bc` (the reward model has no "
                          "demonstrations to replay and no rewards to weigh by); remove them")
    encoded = encode_pairs(tokenizer, [(p, c) for p, c, _ in rows], max_len)
    labels = [y for _, _, y in rows]
    n, positives = len(rows), sum(labels)
    # Right answers are rare early on; weigh the classes equally so the model cannot win by always saying no.
    pos_weight = (n - positives) / positives if 0 < positives < n else 1.0
    scored = [(ids, n_prompt, y) for (ids, n_prompt), y in zip(encoded, labels)]
    return train_loop(_token_scorer(model), scored, train, VerdictLoss(tokenizer.pad_token_id, pos_weight),
                      precision=precision)


def new_reward_model(policy: Path, seed: int):
    """(model, tokenizer): a one-logit sequence classifier initialised from the policy folder's weights, its new
    head drawn with `seed`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from restem.training.modeling import load_policy

    _, tokenizer = load_policy(policy)
    torch.manual_seed(seed)  # the new classification head
    model = AutoModelForSequenceClassification.from_pretrained(resolve_checkpoint(policy), local_files_only=True,
                                                               num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def predict(model, tokenizer, pairs: Sequence[tuple[str, str]], max_len: int, batch_size: int = 256) -> list[float]:
    """P(good) for each (prompt, completion), rounded to 6 decimals; batched by length, so the result
    does not depend on the order of `pairs`."""
    import torch

    encoded = [ids for ids, _ in encode_pairs(tokenizer, pairs, max_len)]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), encoded[i]))
    out = [0.0] * len(encoded)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            probs = torch.sigmoid(_logits(model, [encoded[i] for i in idx], tokenizer.pad_token_id)).tolist()
            for i, p in zip(idx, probs):
                out[i] = round(float(p), 6)
    return out


def holdout_report(probs: Sequence[float], labels: Sequence[int]) -> dict:
    """Accuracy at 0.5, the majority-class baseline and AUC of held-out predictions (None when there are none)."""
    if not labels:
        return {"holdout_accuracy": None, "holdout_majority_baseline": None, "holdout_auc": None}
    area = auc(probs, labels)
    return {
        "holdout_accuracy": round(sum((p >= 0.5) == bool(y) for p, y in zip(probs, labels)) / len(labels), 6),
        "holdout_majority_baseline": round(max(sum(labels), len(labels) - sum(labels)) / len(labels), 6),
        "holdout_auc": None if area is None else round(area, 6),
    }


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


def score_with_model(folder: Path, samples: Sequence[dict], batch_size: int = 256) -> tuple[list[float], str]:
    """Reward-model scores for sample rows, in order, and the reward model's hash."""
    model, tokenizer, rm_hash = load_reward_model(folder)
    pairs = [(s["prompt"], s["completion"]) for s in samples]
    return predict(model, tokenizer, pairs, context_length(model), batch_size), rm_hash
