"""Probe of the easy-to-hard curriculum (issue 6, after Lee et al. 2025), outside the DVC pipeline.

Reversed addition with index hints (verifiers/reversed_addition.py), a NoPE model from
`restem.training.modeling.build_model` (position: none), `restem.training.sft.train_sft`, `TransformersEngine` and
the `reversed_addition` verifier:

1. base: SFT on fresh demonstrations of 1..demo_max digits;
2. iteration k = 1..K: a pool of `pool` problems, 75 % at demo_max + k digits and 25 % at the two
   easier lengths; `samples` samples each at `temperature`; keep correct ones, at most 2 distinct per
   problem; add them to everything kept so far; continue from the previous model for `iter_steps`
   steps with `replay` of each batch fresh 1..demo_max demonstrations;
3. after the base and after every iteration: greedy accuracy on a test set per digit count.

Prints one JSON line per phase (accuracy per digit count, kept counts, wall seconds) and a summary.

    nice -n 10 python -m benchmarks.easy_to_hard_probe --seed 0 --out /tmp/probe0.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from restem.sampling.engines import Request, SamplingParams, TransformersEngine, set_threads
from restem.verifiers.reversed_addition import ReversedAdditionVerifier, make_prompt, make_solution


def operand(rng: random.Random, digits: int) -> int:
    return rng.randrange(0, 10) if digits == 1 else rng.randrange(10 ** (digits - 1), 10**digits)


def problem(rng: random.Random, digits: int) -> dict:
    a, b = operand(rng, digits), operand(rng, digits)
    off = rng.randrange(26)
    return {"prompt": make_prompt(a, b, off), "reference": str(a + b), "solution": make_solution(a, b, off),
            "digits": digits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--demo-max", type=int, default=4)
    ap.add_argument("--base-steps", type=int, default=2000)
    ap.add_argument("--base-lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--pool", type=int, default=400)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--keep", type=int, default=2, help="kept distinct correct samples per problem")
    ap.add_argument("--iter-steps", type=int, default=200)
    ap.add_argument("--iter-lr", type=float, default=1e-3)
    ap.add_argument("--replay", type=float, default=0.3)
    ap.add_argument("--test-max", type=int, default=8)
    ap.add_argument("--test-count", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen-batch", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from restem.schemas.params import Architecture, TrainParams
    from restem.training.modeling import build_char_tokenizer, build_model
    from restem.training.sft import train_sft

    set_threads(args.threads)
    t_start = time.monotonic()
    rng = random.Random(args.seed)
    verifier = ReversedAdditionVerifier()
    tests: dict[int, list[dict]] = {}
    taken: set[str] = set()
    for d in range(1, args.test_max + 1):
        rows: list[dict] = []
        while len(rows) < args.test_count:
            p = problem(rng, d)
            if p["prompt"] not in taken:
                taken.add(p["prompt"])
                rows.append(p)
        tests[d] = rows

    def unseen(digits: int) -> dict:
        """A problem of `digits` digits that is not in a test set."""
        while True:
            p = problem(rng, digits)
            if p["prompt"] not in taken:
                return p

    def fresh(count: int, low: int, high: int) -> list[dict]:
        return [unseen(rng.randint(low, high)) for _ in range(count)]

    tok = build_char_tokenizer()
    arch = Architecture(hidden_size=args.hidden, intermediate_size=args.intermediate, layers=args.layers,
                        heads=args.heads, max_positions=6 * max(args.test_max, args.demo_max + args.iterations) + 8,
                        position="none")
    max_len = arch.max_positions
    model = build_model(tok, arch, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log: list[dict] = []

    def emit(rec: dict) -> None:
        rec["elapsed_s"] = round(time.monotonic() - t_start, 1)
        log.append(rec)
        print(json.dumps(rec), flush=True)

    def evaluate(phase: str) -> dict[int, float]:
        t0 = time.monotonic()
        engine = TransformersEngine(model, tok, batch_size=args.gen_batch)
        rows = [p for d in sorted(tests) for p in tests[d]]
        outs = engine.generate([Request(p["prompt"], 0) for p in rows],
                               SamplingParams(temperature=0.0, max_new_tokens=3 * args.test_max + 2))
        acc: dict[int, list[int]] = {}
        for p, c in zip(rows, outs):
            acc.setdefault(p["digits"], []).append(int(bool(verifier(c.text, p).correct)))
        result = {d: round(100.0 * sum(v) / len(v), 1) for d, v in acc.items()}
        emit({"phase": phase, "what": "eval", "acc": result, "wall_s": round(time.monotonic() - t0, 1)})
        return result

    # --- base
    t0 = time.monotonic()
    demos = fresh(args.base_steps * args.batch, 1, args.demo_max)
    pairs = [(p["prompt"], p["solution"]) for p in demos]
    base_params = TrainParams(epochs=1.0, lr=args.base_lr, batch_size=args.batch, warmup_ratio=0.05,
                              schedule="cosine", weight_decay=0.0, seed=args.seed)
    losses = train_sft(model, tok, pairs, base_params, max_len, log_every=100)
    emit({"phase": "base", "what": "train", "params": n_params, "steps": args.base_steps,
          "loss": losses[-1]["loss"], "loss_curve": [round(r["loss"], 3) for r in losses],
          "wall_s": round(time.monotonic() - t0, 1)})
    history = {"base": evaluate("base")}

    kept: list[tuple[str, str]] = []
    for k in range(1, args.iterations + 1):
        hard = args.demo_max + k
        t0 = time.monotonic()
        n_hard = round(0.75 * args.pool)
        n_easy = args.pool - n_hard
        pool = [unseen(hard) for _ in range(n_hard)]
        pool += [unseen(hard - 1 - (i % 2)) for i in range(n_easy)]
        requests = [Request(p["prompt"], args.seed * 1_000_003 + k * 100_003 + i * args.samples + j)
                    for i, p in enumerate(pool) for j in range(args.samples)]
        engine = TransformersEngine(model, tok, batch_size=args.gen_batch)
        outs = engine.generate(requests, SamplingParams(temperature=args.temperature,
                                                        max_new_tokens=3 * hard + 2))
        t_grow = time.monotonic() - t0
        new, per_digit_correct, per_digit_total = [], {}, {}
        for i, p in enumerate(pool):
            seen: set[str] = set()
            for j in range(args.samples):
                text = outs[i * args.samples + j].text
                ok = bool(verifier(text, p).correct)
                per_digit_total[p["digits"]] = per_digit_total.get(p["digits"], 0) + 1
                per_digit_correct[p["digits"]] = per_digit_correct.get(p["digits"], 0) + ok
                if ok and text not in seen and len(seen) < args.keep:
                    seen.add(text)
                    new.append((p["prompt"], text))
        kept += new
        sample_acc = {d: round(100.0 * per_digit_correct[d] / per_digit_total[d], 1) for d in sorted(per_digit_total)}
        # training rows: (1 - replay) from everything kept so far, `replay` fresh demonstrations
        t1 = time.monotonic()
        total = args.iter_steps * args.batch
        n_replay = round(args.replay * total)
        draw = random.Random(args.seed * 7919 + k)
        rows = [kept[draw.randrange(len(kept))] for _ in range(total - n_replay)] if kept else []
        rows += [(p["prompt"], p["solution"]) for p in fresh(n_replay, 1, args.demo_max)]
        it_params = TrainParams(epochs=1.0, lr=args.iter_lr, batch_size=args.batch, warmup_ratio=0.05,
                                schedule="cosine", weight_decay=0.0, seed=args.seed + k)
        train_sft(model, tok, rows, it_params, max_len, log_every=100)
        emit({"phase": f"iter{k}", "what": "grow+train", "hard_digits": hard, "sample_acc": sample_acc,
              "kept_new": len(new), "kept_total": len(kept), "grow_s": round(t_grow, 1),
              "train_s": round(time.monotonic() - t1, 1)})
        history[f"iter{k}"] = evaluate(f"iter{k}")

    summary = {"seed": args.seed, "args": {k: str(v) for k, v in vars(args).items()}, "params": n_params,
               "history": history, "total_s": round(time.monotonic() - t_start, 1), "torch": torch.__version__}
    print(json.dumps({"summary": summary}), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"log": log, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
