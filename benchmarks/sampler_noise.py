"""Time per decoding step of the transformers engine's sampler, at a real model's vocabulary size.

    python benchmarks/sampler_noise.py                          # 256 rows x 151,936 tokens (Qwen2.5's vocab)
    python benchmarks/sampler_noise.py --rows 64 --vocab 32000  # Llama-2's vocab
    python benchmarks/sampler_noise.py --device cpu

On the device the engine would use (a CUDA GPU where there is one), it times, over random logits:
- multinomial: what Hugging Face's own sampling does per step (temperature, softmax, `torch.multinomial`),
  with one global RNG, so a sample depends on its batch; the baseline;
- generator: restem's Gumbel-max with noise from one CPU `torch.Generator` per row, copied to the device
  (the engine's noise on the CPU, where it keeps the committed outputs);
- hash: restem's Gumbel-max with `hash_uniform` computed on the device (the engine's noise on a GPU).
It prints milliseconds per step and the ratios generator / multinomial and hash / multinomial.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(step, device: str, repeat: int) -> float:
    import torch

    step(0)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(1, repeat + 1):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat * 1e3


def main() -> None:
    import torch

    from restem.sampling.engines import SamplingParams, _GumbelSampler

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=256, help="sequences in the batch (default 256)")
    parser.add_argument("--vocab", type=int, default=151936, help="vocabulary size (default 151,936)")
    parser.add_argument("--steps", type=int, default=20, help="timed decoding steps per kind (default 20)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = args.device
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(args.rows, args.vocab, generator=gen, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    sampling = SamplingParams(temperature=0.7, max_new_tokens=1)
    seeds = [1000 + i for i in range(args.rows)]
    torch.manual_seed(0)

    def multinomial(_):
        probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
        return torch.multinomial(probs, 1)

    samplers = {kind: _GumbelSampler(seeds, sampling, kind) for kind in ("generator", "hash")}

    def gumbel(kind):
        return lambda _: samplers[kind](None, logits).argmax(dim=-1)

    print(f"{args.rows} rows x {args.vocab:,} tokens on {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}"
          f" ({torch.get_num_threads()} CPU threads)")
    ms = {}
    for kind, step in (("multinomial", multinomial), ("generator", gumbel("generator")), ("hash", gumbel("hash"))):
        ms[kind] = _time(step, device, args.steps)
        print(f"{kind:12s} {ms[kind]:9.3f} ms per step")
    for kind in ("generator", "hash"):
        print(f"{kind} / multinomial: {ms[kind] / ms['multinomial']:.2f} (time per step; lower is faster)")
    print(f"generator / hash: {ms['generator'] / ms['hash']:.1f}")


if __name__ == "__main__":
    main()
