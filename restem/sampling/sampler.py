"""Sampling rows from a policy: the engine a params file names, and K samples per problem as `Sample` rows.

Prompts are rendered once per problem by restem/prompting.py (params `prompt`), and the engine is given their
token ids; each row stores the rendered prompt and the sampled completion ids, so Improve trains on exactly
what was sampled. Each (problem, sample index) gets its own seed derived from (seed, iteration, problem_id, index), so a
sample does not depend on batch order and reruns are byte-identical. Grow, Evaluate, the voters and the
reward model's training data all sample through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from restem.sampling.engines import Engine, Request, SamplingParams, TransformersEngine, device_and_dtype
from restem.schemas.hashing import content_hash, derive_seed
from restem.schemas.params import PromptParams, RuntimeParams
from restem.schemas.tables import Sample
from restem.training.modeling import load_policy


def make_engine(name: str, policy: Path, batch_size: int, runtime: RuntimeParams | None = None) -> Engine:
    """The sampling engine named in params (grow.engine), over the policy folder; `runtime` holds the vllm
    engine's knobs (defaults when None)."""
    if name == "transformers":
        device, dtype = device_and_dtype((runtime or RuntimeParams()).precision)
        model, tokenizer = load_policy(policy, dtype)
        return TransformersEngine(model.to(device), tokenizer, batch_size=batch_size)
    if name == "vllm":
        from restem.sampling.vllm_engine import VLLMEngine

        r = runtime or RuntimeParams()
        return VLLMEngine(policy, tensor_parallel_size=r.tensor_parallel_size, kv_cache_gb=r.vllm_kv_cache_gb,
                          gpu_memory_utilization=r.gpu_memory_utilization, max_num_seqs=batch_size,
                          dtype=r.vllm_dtype)
    raise ValueError(f"unknown engine {name!r}")  # params validation rules this out


def numerics(engine: str, runtime: RuntimeParams) -> dict:
    """What sets the arithmetic of `make_engine(engine, ...)` beyond the params sections: the device and dtype of
    the transformers engine (runtime.precision, resolved), or vLLM's dtype (runtime.vllm_dtype). Samples change
    when it changes, so Grow's resume key and Evaluate's memo key hold it (and dvc.yaml tracks both knobs)."""
    if engine == "vllm":
        return {"vllm_dtype": runtime.vllm_dtype}
    device, dtype = device_and_dtype(runtime.precision)
    return {"device": device, "dtype": dtype}


def sample(engine: Engine, problems: Sequence[dict], k: int, sampling: SamplingParams, seed: int, iteration: int,
           purpose: str, policy: str, label: str = "", prompt: PromptParams | None = None,
           root: Path = Path("."), first_index: int = 0) -> list[Sample]:
    """k samples per problem as Sample rows (greedy when sampling.temperature is 0), each problem's prompt
    rendered with `prompt` (params `prompt`; None: the defaults, the question as is), with sample indices
    first_index .. first_index + k - 1 (Grow's budget rounds continue where the last round stopped)."""
    from restem.prompting import prompt_ids, render

    spec = prompt or PromptParams()
    keys, requests = [], []
    for p in problems:
        text = render(engine.tokenizer, spec, p["prompt"], root)
        ids = tuple(prompt_ids(engine.tokenizer, spec, text))
        for index in range(first_index, first_index + k):
            s = derive_seed(seed, iteration, p["problem_id"], index)
            keys.append((p, text, index, s))
            requests.append(Request(text, s, ids, p["problem_id"]))
    completions = engine.generate(requests, sampling, progress=label)
    rows = []
    for (p, text, index, s), c in zip(keys, completions):
        # The rendered prompt joins the id only where it is not the question itself, so ids stay as they were.
        rendered = [] if text == p["prompt"] else [text]
        rows.append(Sample(
            sample_id=content_hash("sample", p["problem_id"], policy, sampling.as_dict(), index, s, *rendered),
            problem_id=p["problem_id"], iteration=iteration, purpose=purpose, policy=policy, engine=engine.name,
            sample_index=index, seed=s, temperature=sampling.temperature, prompt=text, completion=c.text,
            finish_reason=c.finish_reason, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
            completion_ids=list(c.token_ids),
        ))
    return rows
