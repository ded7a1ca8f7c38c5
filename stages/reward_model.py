"""Stage `reward_model`: a learned outcome reward model, `models/reward`, its training data,
`data/reward/{samples,scores}.parquet`, and how well it agrees with the verifier on held-out
problems, `metrics/reward.json`.

Used when `score.reward` is `model` (the original ReST scores samples with a learned reward model
instead of a verifier). Either `reward_model.checkpoint` names a local Hugging Face
sequence-classification checkpoint (the folder then only records it), or a small one is trained here
so that the embedded default works offline: the base model samples the Grow pool, the verifier labels
each sample, and a sequence classifier initialised from the base model learns P(correct | prompt,
completion) with binary cross-entropy, through the same training loop as SFT. Problems are split into
train and held-out sets, so its accuracy and AUC on unseen problems are measured, not assumed. The model
code (training, scoring, loading) is restem/training/reward.py; this module reads params, calls it and
writes the outputs.

With `score.reward: verifier` the stage only writes markers saying it is unused.
"""

from __future__ import annotations

import json
from pathlib import Path

from restem.schemas.hashing import content_hash
from restem.schemas.io import atomic_dir, read_rows, write_json, write_rows
from restem.schemas.params import Params, RewardModelParams
from restem.schemas.tables import Problem, Sample, Score
from restem.workspace import METRICS, log, model_dir, problems_dir, reward_data_dir, reward_dir, user_input, write_unused
from restem.sampling.engines import SamplingParams, set_threads
from restem.training.modeling import link_checkpoint, model_hash, save_policy
from restem.training.reward import (REWARD, context_length, holdout_report, new_reward_model, pick_problems, predict,
                                    split_labelled, train_reward_model)


def run(params: Params, root: Path = Path(".")) -> dict:
    if params.score.reward != "model":
        write_unused("score.reward is `verifier`", root / METRICS / "reward.json",
                     {reward_dir(root): {}, reward_data_dir(root): {}})
        log("reward_model: not used (score.reward is `verifier`)")
        return {"used": False}
    rm: RewardModelParams = params.reward_model  # present: params validation checks it
    if rm.checkpoint:
        meta = link_checkpoint(user_input(rm.checkpoint, "reward_model", "reward_model.checkpoint", root),
                               reward_dir(root), "reward_model.checkpoint", REWARD,
                               "a local sequence-classification folder")
        with atomic_dir(reward_data_dir(root)) as tmp:
            write_json(tmp / "unused.json", {"unused": True, "why": "reward_model.checkpoint is given"})
        summary = {"used": True, "checkpoint": meta.checkpoint, "model": meta.model_hash}
        write_json(root / METRICS / "reward.json", summary)
        log(f"reward_model: using checkpoint {meta.checkpoint}")
        return summary
    from restem.sampling import sampler
    from restem.verifiers import batch

    set_threads(params.runtime.threads)
    problems = pick_problems(read_rows(problems_dir(root) / "train.parquet", Problem), rm.problems, rm.seed)
    base = model_dir(0, root)
    policy = model_hash(base)
    engine = sampler.make_engine(params.grow.engine, base, params.runtime.batch_size, params.runtime)
    samples = sampler.sample(engine, problems, rm.samples_per_problem,
                          SamplingParams(rm.temperature, rm.max_new_tokens, stop=tuple(params.grow.stop)), rm.seed, 0,
                          "reward", policy, label="reward_model: sampling", prompt=params.prompt, root=root)
    del engine
    sample_rows = [s.model_dump() for s in samples]
    views = {p["problem_id"]: batch.problem_view(p) for p in problems}
    scores = batch.score_samples(params.score.verifier, sample_rows, views, params.runtime.workers,
                                 params.score.timeout_s, extraction=params.score.extraction)
    labelled, train_rows, held = split_labelled(sample_rows, scores, rm.seed, rm.holdout)

    model, tokenizer = new_reward_model(base, rm.train.seed)
    positives = sum(y for _, _, y in train_rows)
    log(f"reward_model: training on {len(train_rows)} labelled samples ({positives:.0f} correct), "
        f"holding out {len(held)}")
    train_log = train_reward_model(model, tokenizer, train_rows, rm.train, context_length(model),
                                   params.runtime.precision)
    probs = predict(model, tokenizer, [(s["prompt"], s["completion"]) for s, _ in held], context_length(model),
                    params.runtime.batch_size)
    meta = save_policy(model, tokenizer, reward_dir(root), {
        "iteration": REWARD, "parent": policy, "params": json.loads(rm.model_dump_json()), "train_log": train_log,
        "training_data": content_hash(sorted(s["sample_id"] for s, _ in labelled))})
    with atomic_dir(reward_data_dir(root)) as tmp:
        write_rows(tmp / "samples.parquet", Sample, samples)
        write_rows(tmp / "scores.parquet", Score, scores)
    summary = {
        "used": True, "model": meta.model_hash, "samples": len(labelled), "train_samples": len(train_rows),
        "holdout_samples": len(held), "train_positive_rate": round(positives / max(1, len(train_rows)), 6),
        "loss_first": train_log[0]["loss"], "loss_last": train_log[-1]["loss"],
        **holdout_report(probs, [int(sc.correct) for _, sc in held]),
    }
    write_json(root / METRICS / "reward.json", summary)
    log(f"reward_model: loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f}; held-out accuracy "
        f"{summary['holdout_accuracy']} (majority baseline {summary['holdout_majority_baseline']}), "
        f"AUC {summary['holdout_auc']}")
    return summary


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("reward_model")
