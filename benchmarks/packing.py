"""Improve's training throughput with and without sequence packing, on GSM8K-style kept rows.

    python benchmarks/packing.py                    # tiny Llama, character tokenizer, context 1024
    python benchmarks/packing.py --arch qwen2       # the same shape as a Qwen2ForCausalLM
    python benchmarks/packing.py --context 2048 --batch-size 32 --repeat 3

Rows are (question, solution) pairs of GSM8K: every solution in tests/data/gsm8k/example_model_solutions.jsonl
(the reference and the sampled ones, right or wrong: this measures speed, not learning), laid out as Improve's
rows are (`train_sft`: prompt "Question: ...\\nAnswer:", the solution, EOS; loss on the solution). A model of the
chosen architecture (a few layers, initialised from a config, as long a context as `--context`) on a character
tokenizer over the rows' characters trains one epoch (each row exactly once, the same batches in both runs) with
`improve.packing` off, then on; the runs alternate `--repeat` times and the median of each is reported.
Tokens/s counts real tokens only (prompt and completion, no padding), so both runs process the same number; the
padding share is the share of pad positions over all forward passes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO / "tests" / "data" / "gsm8k" / "example_model_solutions.jsonl"


def gsm8k_pairs(path: Path) -> list[tuple[str, str]]:
    """(prompt, completion) of every solution in the file, in file order."""
    pairs = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        prompt = f"Question: {row['question']}\nAnswer:"
        solutions = [row["ground_truth"]] + [v["solution"] for k, v in row.items() if isinstance(v, dict)]
        pairs += [(prompt, " " + s) for s in solutions]
    return pairs


def build(arch: str, tokenizer, context: int, hidden: int, layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=context,
                 tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**shape))
    return LlamaForCausalLM(LlamaConfig(**shape))


def padding(rows, batch_size: int, seed: int, capacity: int | None) -> float:
    """The pad share over one epoch's forward passes (the batches train_loop draws with this seed)."""
    import torch

    from restem.training.packing import pack_rows

    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    real = slots = 0
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start : start + batch_size]]
        lengths = [len(r[0]) for r in batch]
        packs = pack_rows(batch, capacity) if capacity else [[i] for i in range(len(batch))]
        real += sum(lengths)
        slots += len(packs) * max(sum(lengths[i] for i in p) for p in packs)
    return 1 - real / slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="GSM8K-style JSONL (question, ground_truth, ...)")
    parser.add_argument("--arch", choices=["llama", "qwen2"], default="llama")
    parser.add_argument("--context", type=int, default=1024, help="the model's context: packed sequence length")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from restem.schemas.params import TrainParams
    from restem.training.modeling import build_char_tokenizer
    from restem.training.sft import encode_pairs, train_sft

    torch.set_num_threads(args.threads)
    pairs = gsm8k_pairs(args.data)
    pairs = pairs[: len(pairs) // args.batch_size * args.batch_size]  # whole batches: each row exactly once
    tokenizer = build_char_tokenizer("".join(sorted({ch for p, c in pairs for ch in p + c})))
    rows = [(ids, n, None) for ids, n in encode_pairs(tokenizer, pairs, args.context)]
    real_tokens = sum(len(ids) for ids, _, _ in rows)
    times: dict[bool, list[float]] = {False: [], True: []}
    losses = {}
    for _ in range(args.repeat):
        for packing in (False, True):
            model = build(args.arch, tokenizer, args.context, args.hidden, args.layers)
            params = TrainParams(epochs=1, lr=1e-3, batch_size=args.batch_size, seed=0, packing=packing)
            start = time.perf_counter()
            log = train_sft(model, tokenizer, pairs, params, args.context, log_every=1, precision="float32")
            times[packing].append(time.perf_counter() - start)
            losses[packing] = [e["loss"] for e in log]
    drift = max(abs(a - b) / abs(a) for a, b in zip(losses[False], losses[True]))
    print(f"{len(rows)} rows, {real_tokens:,} real tokens ({real_tokens / len(rows):.0f} per row, longest "
          f"{max(len(r[0]) for r in rows)}), {args.arch} {args.layers}x{args.hidden}, context {args.context}, "
          f"batch {args.batch_size}, {len(losses[False])} steps, {args.threads} thread(s), {args.repeat} round(s)")
    base = real_tokens / statistics.median(times[False])
    for packing in (False, True):
        rate = real_tokens / statistics.median(times[packing])
        share = padding(rows, args.batch_size, 0, args.context if packing else None)
        print(f"  packing {'on ' if packing else 'off'}: {rate:8,.0f} real tokens/s  x{rate / base:.2f}  "
              f"padding {share:.1%}")
    print(f"  largest relative difference of a step's loss, packed vs not: {drift:.1e}")


if __name__ == "__main__":
    main()
