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
from typing import TYPE_CHECKING, Any, Optional, Protocol, Sequence

from restem.schemas.errors import RestemError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float  # 0: greedy
    max_new_tokens: int
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()  # stop strings

    def as_dict(self) -> dict:
        d = {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens, "top_p": self.top_p, "top_k": self.top_k}
        if self.stop:  # only when set, so the sample ids of runs without stop strings stay as they were
            d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class Request:
    prompt: str  # the rendered prompt (restem/prompting.py: render)
    seed: int
    ids: Optional[tuple[int, ...]] = None  # its token ids (prompting.prompt_ids); None: tokenizer(prompt)
    key: str = ""  # what error messages call it (the problem id)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # eos | stop | length
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()  # the sampled ids, cut where the completion ends


def check_context(n_prompt: int, max_new_tokens: int, max_len: Optional[int], key: str = "") -> None:
    """The rule both engines apply before generating: a prompt's tokens plus max_new_tokens must fit the model's
    positions (max_position_embeddings; vLLM's max_model_len)."""
    if max_len and n_prompt + max_new_tokens > max_len:
        which = f"problem {key}: its" if key else "a"
        raise RestemError(
            f"{which} prompt of {n_prompt} tokens plus max_new_tokens={max_new_tokens} exceeds the model's {max_len} "
            "positions; lower grow/evaluate max_new_tokens (or reward_model.max_new_tokens), shorten the prompt "
            "(prompt.template, prompt.fewshot, prompt.system) or drop the problem, or raise base.model.max_positions")


def _decode(tok, ids: Sequence[int]) -> str:
    return tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def stop_string_end(tok, ids: Sequence[int], stop: Sequence[str]) -> Optional[tuple[int, int]]:
    """(n, at): the fewest leading ids whose text holds a stop string, and where the first stop string starts in
    that text; None when no stop string is in the text of `ids`. A binary search: a prefix's text holding one
    means every longer prefix's does too."""
    if not stop or not any(s in _decode(tok, ids) for s in stop):
        return None
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        if any(s in _decode(tok, ids[:mid]) for s in stop):
            high = mid
        else:
            low = mid + 1
    text = _decode(tok, ids[:low])
    return low, min(text.index(s) for s in stop if s in text)


def completion(tok, ids: Sequence[int], prompt_tokens: int, end_ids: Sequence[int] = (),
               stop: Sequence[str] = ()) -> Completion:
    """A completion from the token ids an engine generated after the prompt. Both engines keep this bookkeeping
    here, so their rows agree.

    - `eos`: cut after the first end-of-turn id (`end_ids`, default the tokenizer's EOS); the id stays in
      `token_ids` (training on it teaches the model to end its turn), the text leaves it out.
    - `stop`: the text, before that end, holds a stop string: the text is cut before it (a verifier must not
      read a next "Question:"), while `token_ids` keep everything up to and including the token that completed
      it. Those are the tokens the policy produced; training on them teaches it to write the marker it is
      stopped at, as an end-of-turn token would (a token can also carry text on both sides of the cut).
    - `length`: max_new_tokens reached; every id kept.
    Special tokens the model wrote before the end stay in the text. Anything after the end (an engine's
    padding) is dropped."""
    ids = [int(i) for i in ids]
    ends = set(end_ids) or {tok.eos_token_id}
    cut = next((n for n, i in enumerate(ids) if i in ends), None)
    body = ids if cut is None else ids[:cut]
    hit = stop_string_end(tok, body, stop)
    if hit is not None:
        n, at = hit
        kept, text, reason = ids[:n], _decode(tok, ids[:n])[:at], "stop"
    elif cut is not None:
        kept, text, reason = ids[: cut + 1], _decode(tok, body), "eos"
    else:
        kept, text, reason = ids, _decode(tok, ids), "length"
    return Completion(text, reason, int(prompt_tokens), len(kept), tuple(kept))


class Engine(Protocol):
    name: str  # engine and version, recorded in every sample row
    tokenizer: Any  # the policy's tokenizer: prompts are rendered and tokenised with it (restem/prompting.py)

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


class _StopStrings:
    """Stopping criterion: a row is done once the text of its newest tokens holds a stop string. Only a window of
    the last tokens is decoded each step (a stop string of c characters spans at most 4c byte-level tokens, plus
    one that completes it); `completion` later finds exactly where it ended."""

    def __init__(self, tok, stop: Sequence[str], prompt_width: int):
        self.tok, self.stop, self.start = tok, list(stop), prompt_width
        self.window = 4 * max(len(s) for s in stop) + 2

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor", **kwargs) -> "torch.Tensor":
        import torch

        new = input_ids[:, self.start :]
        tail = new[:, -self.window :].tolist()
        done = [any(s in _decode(self.tok, row) for s in self.stop) for row in tail]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class TransformersEngine:
    """Batched Hugging Face `generate` over a loaded policy."""

    def __init__(self, model, tokenizer, batch_size: int = 256, noise: str = "auto"):
        import transformers

        from restem.prompting import end_of_turn_ids

        self.model, self.tokenizer, self.batch_size, self.noise = model, tokenizer, batch_size, noise
        self.end_ids = end_of_turn_ids(tokenizer, model)
        from restem.training.modeling import is_nope

        # A model without positional encoding (NoPE, the easy-to-hard preset) has no position limit: generate
        # decodes past max_position_embeddings, which is what length generalisation needs.
        self.max_len = None if is_nope(model) else getattr(model.config, "max_position_embeddings", None)
        self.name = f"transformers {transformers.__version__}"

    def _batch(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        tok = self.tokenizer
        encoded = [list(r.ids) if r.ids is not None else tok(r.prompt)["input_ids"] for r in requests]
        width = max(len(ids) for ids in encoded)
        # Left padding, as the tokenizer pads a batch: the same tensors as tok(prompts, padding=True).
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(ids)) + ids for ids in encoded])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=self.end_ids,
            bos_token_id=tok.bos_token_id,
            use_cache=True,
        )
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            processors.append(_GumbelSampler([r.seed for r in requests], sampling, self.noise))
        criteria = StoppingCriteriaList([_StopStrings(tok, sampling.stop, width)] if sampling.stop else [])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                generation_config=config, logits_processor=processors, stopping_criteria=criteria,
            )
        new = out[:, width:].tolist()
        return [completion(tok, ids, len(p), self.end_ids, sampling.stop) for ids, p in zip(new, encoded)]

    def generate(self, requests: Sequence[Request], sampling: SamplingParams, progress: str = "") -> list[Completion]:
        """Completions in request order. Requests are batched by prompt length to limit padding."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        for r in requests:
            check_context(len(r.ids) if r.ids is not None else len(self.tokenizer(r.prompt)["input_ids"]),
                          sampling.max_new_tokens, self.max_len, r.key)
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
