"""Sampling engines behind one small interface: prompts, per-request seeds and sampling params in,
completions out, in request order.

`TransformersEngine` uses Hugging Face `generate` (batched, KV cache, left padding). Sampling is
done as Gumbel-max: noise drawn for each request from its own seed is added to its logits, and
`generate` then takes the argmax. A request's completion thus depends on its prompt and seed, not on
which other requests share its batch or in which order.

Where the noise comes from depends on where the logits are. On the CPU each request has its own
`torch.Generator`. On a GPU that would cost a host-side draw of batch x vocabulary numbers and a copy
per decoding step (about 55 ms per step for 64 requests over a 152k vocabulary on this CPU), so there
the noise is a counter-based hash of (seed, step, token) computed on the GPU in a few integer kernels
(`hash_uniform`); its integers are the same on every device.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float  # 0: greedy
    max_new_tokens: int
    top_p: float = 1.0
    top_k: int = 0

    def as_dict(self) -> dict:
        return {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens, "top_p": self.top_p, "top_k": self.top_k}


@dataclass(frozen=True)
class Request:
    prompt: str
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # stop | length
    prompt_tokens: int
    completion_tokens: int


def completion(tok, ids: Sequence[int], prompt_tokens: int) -> Completion:
    """A completion from the token ids an engine generated after the prompt: cut at the first EOS (`stop`,
    the EOS counted as a completion token; `length` without one), pad tokens dropped, decoded. Both engines
    keep this bookkeeping here, so their rows agree."""
    ids = list(ids)
    if tok.eos_token_id in ids:
        ids, reason = ids[: ids.index(tok.eos_token_id)], "stop"
    else:
        reason = "length"
    ids = [i for i in ids if i != tok.pad_token_id]
    return Completion(tok.decode(ids, skip_special_tokens=True), reason, int(prompt_tokens),
                      len(ids) + (reason == "stop"))


class Engine(Protocol):
    name: str  # engine and version, recorded in every sample row

    def generate(self, requests: Sequence[Request], sampling: SamplingParams, progress: str = "") -> list[Completion]: ...


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def device_and_dtype(precision: str = "auto") -> tuple[str, str]:
    """Where the transformers engine runs and in which dtype: a CUDA GPU in bfloat16 when there is one
    (precision `auto`), else the CPU in float32."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        return device, "bfloat16" if device == "cuda" else "float32"
    return device, precision


def _signed(x: int) -> int:
    """A 64-bit constant as the signed int64 torch stores."""
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_xor_(z: "torch.Tensor", bits: int) -> "torch.Tensor":
    """z ^= z >>> bits (a logical shift of the 64-bit pattern; torch's >> on int64 is arithmetic)."""
    return z.bitwise_xor_((z >> bits) & ((1 << (64 - bits)) - 1))


def _mix64_(z: "torch.Tensor") -> "torch.Tensor":
    """SplitMix64's finaliser, in place, with int64 arithmetic that wraps modulo 2**64."""
    _shift_xor_(z, 30).mul_(_MIX1)
    _shift_xor_(z, 27).mul_(_MIX2)
    return _shift_xor_(z, 31)


def hash_uniform(seeds: "torch.Tensor", step: int, vocab: int) -> "torch.Tensor":
    """Uniform noise in (0, 1), float32 of shape (len(seeds), vocab), on the seeds' device: a pure function
    of (seed, step, token index). Row i is SplitMix64(SplitMix64(seed_i + golden) + (step * vocab + j) *
    golden) for token j, whose top 23 bits become (bits + 0.5) / 2**23, which float32 holds exactly."""
    import torch

    key = _mix64_(seeds.to(torch.int64) + _GOLDEN)
    counter = torch.arange(vocab, dtype=torch.int64, device=seeds.device).add_(step * vocab).mul_(_GOLDEN)
    z = _mix64_(key[:, None] + counter[None, :])
    return ((z >> 41) & ((1 << 23) - 1)).to(torch.float32).add_(0.5).mul_(2.0 ** -23)


class _GumbelSampler:
    """Logits processor: temperature, top-k/top-p cut, then per-row Gumbel noise drawn from each row's seed:
    from per-row CPU generators (noise `generator`) or from `hash_uniform` on the logits' device (noise
    `hash`); `auto` takes the generators when the logits are on the CPU, else the hash."""

    def __init__(self, seeds: Sequence[int], sampling: SamplingParams, noise: str = "auto"):
        import torch

        if noise not in ("auto", "generator", "hash"):
            raise ValueError(f"noise must be auto, generator or hash, not {noise!r}")
        self.seeds, self.sampling, self.noise, self.step = list(seeds), sampling, noise, 0
        self.generators = [torch.Generator().manual_seed(s) for s in seeds] if noise != "hash" else []
        self._seed_tensor: "torch.Tensor | None" = None
        self._block: "torch.Tensor | None" = None  # generator noise drawn ahead: rows x steps x vocab

    def _uniform(self, vocab: int, device: "torch.device") -> "torch.Tensor":
        import torch

        if self.noise == "generator" or (self.noise == "auto" and device.type == "cpu"):
            # Several steps' noise per generator in one draw: a generator's stream is the same whether it is
            # drawn step by step or in one piece, and one call per row per block costs far less than one per
            # row per step. Blocks hold at most about 2**24 numbers.
            at = self.step % self._block.shape[1] if self._block is not None else 0
            if self._block is None or at == 0:
                steps = max(1, min(self.sampling.max_new_tokens, (1 << 24) // max(1, len(self.generators) * vocab)))
                self._block = torch.stack([torch.rand(steps * vocab, generator=g) for g in self.generators])
                self._block = self._block.view(len(self.generators), steps, vocab)
            return self._block[:, at].to(device)
        if self._seed_tensor is None or self._seed_tensor.device != device:
            self._seed_tensor = torch.tensor(self.seeds, dtype=torch.int64, device=device)
        return hash_uniform(self._seed_tensor, self.step, vocab)

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor") -> "torch.Tensor":
        import torch

        s = self.sampling
        scores = scores.float() / s.temperature
        if s.top_k and s.top_k < scores.shape[-1]:
            kth = torch.topk(scores, s.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if s.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
            drop_sorted = (cum - torch.softmax(sorted_scores, dim=-1)) > s.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        uniform = self._uniform(scores.shape[-1], scores.device)
        self.step += 1
        uniform = uniform.clamp_(1e-10, 1.0 - 1e-7)
        return scores - torch.log(-torch.log(uniform))


class TransformersEngine:
    """Batched Hugging Face `generate` over a loaded policy."""

    def __init__(self, model, tokenizer, batch_size: int = 256, noise: str = "auto"):
        import transformers

        self.model, self.tokenizer, self.batch_size, self.noise = model, tokenizer, batch_size, noise
        self.name = f"transformers {transformers.__version__}"

    def _batch(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        tok = self.tokenizer
        enc = tok([r.prompt for r in requests], return_tensors="pt", padding=True).to(self.model.device)
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            use_cache=True,
        )
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            processors.append(_GumbelSampler([r.seed for r in requests], sampling, self.noise))
        with torch.inference_mode():
            out = self.model.generate(
                **enc, generation_config=config, logits_processor=processors
            )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        return [completion(tok, ids, plen) for ids, plen in zip(new, prompt_lens)]

    def generate(self, requests: Sequence[Request], sampling: SamplingParams, progress: str = "") -> list[Completion]:
        """Completions in request order. Requests are batched by prompt length to limit padding."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt), i))
        results: list[Completion | None] = [None] * len(requests)
        with Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            disable=not progress, transient=False,
        ) as bar:
            task = bar.add_task(progress, total=len(requests), rate="")
            started, tokens = time.monotonic(), 0
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                for i, c in zip(idx, self._batch([requests[i] for i in idx], sampling)):
                    results[i] = c
                tokens += sum(results[i].completion_tokens for i in idx)
                elapsed = max(time.monotonic() - started, 1e-9)
                rate = f"{(start + len(idx)) / elapsed:,.0f} samples/s {tokens / elapsed:,.0f} tok/s"
                bar.update(task, advance=len(idx), rate=rate)
        return results  # type: ignore[return-value]
