"""Prompts and tokens (restem/prompting.py, the engines' bookkeeping): plain and chat rendering, few-shot files,
stop strings and end-of-turn ids, the prompt-length rule, and the central property: every kept sample trains on
exactly the token ids it was sampled with (chat and plain, on a byte-level BPE chat model and on the char model)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY
from restem.prompting import end_of_turn_ids, prompt_ids, render, training_ids
from restem.schemas.errors import RestemError
from restem.schemas.params import Params, PromptParams

QA = "Question: {prompt}\nAnswer:"


def _fewshot(root: Path, examples: list[tuple[str, str]], name: str = "shots.jsonl") -> str:
    folder = root / "inputs" / "prompt"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in examples))
    return f"inputs/prompt/{name}"


def _load(folder: Path):
    from restem.training.modeling import load_policy

    return load_policy(folder)


def test_plain_render_fills_the_template_after_the_fewshot_examples(tmp_path):
    shots = _fewshot(tmp_path, [("What is 3 plus 4?", " 7"), ("What is 1 plus 1?", " 2")])
    spec = PromptParams(template=QA, fewshot=shots)
    assert render(None, spec, "What is 2 plus 5?", tmp_path) == (
        "Question: What is 3 plus 4?\nAnswer: 7\n\nQuestion: What is 1 plus 1?\nAnswer: 2\n\n"
        "Question: What is 2 plus 5?\nAnswer:")
    assert render(None, PromptParams(), "12+34=") == "12+34="  # the default: the question as is


def test_a_fewshot_file_outside_inputs_prompt_is_refused(tmp_path):
    (tmp_path / "shots.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    with pytest.raises(RestemError, match=r"prompt.fewshot.*inputs/prompt"):
        render(None, PromptParams(fewshot="shots.jsonl"), "q", tmp_path)
    bad = _fewshot(tmp_path, [])
    (tmp_path / bad).write_text('{"prompt": "a"}\n')
    with pytest.raises(RestemError, match=r"line 1: needs string fields `prompt` and `completion`"):
        render(None, PromptParams(fewshot=bad), "q", tmp_path)


def test_chat_render_uses_the_tokenizers_template(chat_model, tmp_path):
    _, tok = _load(chat_model)
    default = render(tok, PromptParams(style="chat"), "What is 2 plus 5?")
    assert default == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2 plus 5?"
                       "<|im_end|>\n<|im_start|>assistant\n")  # no system given: the template's default one
    shots = _fewshot(tmp_path, [("What is 3 plus 4?", "7")])
    text = render(tok, PromptParams(style="chat", system="Be brief.", fewshot=shots), "What is 2 plus 5?", tmp_path)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n"
                    "<|im_start|>assistant\n7<|im_end|>\n<|im_start|>user\nWhat is 2 plus 5?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    # The rendered text holds its special tokens once: none are added again.
    ids = prompt_ids(tok, PromptParams(style="chat"), text)
    start = tok.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == start and ids.count(start) == text.count("<|im_start|>") == 5
    assert tok.decode(ids) == text


def test_chat_style_without_a_chat_template_names_prompt_style():
    from restem.training.modeling import build_char_tokenizer

    with pytest.raises(RestemError, match=r"prompt.style is `chat`.*no chat template.*prompt.style: plain"):
        render(build_char_tokenizer(), PromptParams(style="chat"), "1+2=")


def test_a_jinja_template_points_at_chat_style(tmp_path):
    from restem.publish.importers import problem_rows

    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "What is 2 plus 5?", "answer": "2+5=7\n#### 7"}) + "\n")
    jinja = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    with pytest.raises(RestemError, match=r"--template .* Jinja chat template.*prompt.style: chat"):
        problem_rows(path, "gsm8k", "train", "default", template=jinja)
    rows, _ = problem_rows(path, "gsm8k", "train", "default", template="Q: {prompt}")
    assert rows[0].prompt == "Q: What is 2 plus 5?"
    raw = copy.deepcopy(TINY)
    raw["prompt"]["template"] = jinja
    with pytest.raises(ValueError, match="prompt.style: chat"):
        Params.model_validate(raw)


def test_end_of_turn_ids_add_the_generation_config_list(chat_model):
    model, tok = _load(chat_model)
    assert end_of_turn_ids(tok, model) == [tok.convert_tokens_to_ids("<|im_end|>"),
                                           tok.convert_tokens_to_ids("<|endoftext|>")]
    assert end_of_turn_ids(tok, None) == [tok.eos_token_id]


def test_completion_bookkeeping_eos_stop_and_length(chat_model):
    from restem.sampling.engines import completion

    model, tok = _load(chat_model)
    ends = end_of_turn_ids(tok, model)
    body = tok(" 7\n\nQuestion: What", add_special_tokens=False)["input_ids"]
    im_end, pad, start = (tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>", "<|im_start|>"))
    # a stop string: the text is cut before it, the ids run to the token that completed it
    c = completion(tok, body + [im_end, pad, pad], 5, ends, ["Question:"])
    assert (c.finish_reason, c.text) == ("stop", " 7\n\n")
    assert "Question:" in tok.decode(c.token_ids) and "Question:" not in tok.decode(c.token_ids[:-1])
    assert c.completion_tokens == len(c.token_ids) and list(c.token_ids) == body[: len(c.token_ids)]
    # an end-of-turn id (either of the list): kept in the ids, left out of the text; the padding after it dropped
    c = completion(tok, body + [pad, pad], 5, ends)
    assert (c.finish_reason, c.text, list(c.token_ids)) == ("eos", " 7\n\nQuestion: What", body + [pad])
    # a special token the model wrote before the end stays in the text
    c = completion(tok, [start] + body + [im_end], 5, ends)
    assert c.text == "<|im_start|> 7\n\nQuestion: What" and list(c.token_ids) == [start] + body + [im_end]
    c = completion(tok, body, 5, ends, ["Answer:"])
    assert (c.finish_reason, c.text, list(c.token_ids)) == ("length", " 7\n\nQuestion: What", body)


def test_a_fewshot_base_prompt_stops_at_the_stop_string(chat_model, tmp_path):
    """The chat model on a plain few-shot prompt writes a next "Question:" in some samples; with the stop string
    each of those ends before it (finish_reason stop), the same text up to there, and the rest run as before."""
    from restem.sampling import sampler
    from restem.sampling.engines import SamplingParams, TransformersEngine

    model, tok = _load(chat_model)
    engine = TransformersEngine(model, tok)
    spec = PromptParams(template=QA, fewshot=_fewshot(tmp_path, [("What is 3 plus 4?", " 7")]))
    problems = [{"problem_id": "p", "prompt": "What is 2 plus 5?"}]

    def run(stop):
        return sampler.sample(engine, problems, 24, SamplingParams(1.0, 40, stop=stop), 0, 1, "grow", "policy",
                              prompt=spec, root=tmp_path)

    free, stopped = run(()), run(("Question:",))
    assert free[0].prompt == "Question: What is 3 plus 4?\nAnswer: 7\n\nQuestion: What is 2 plus 5?\nAnswer:"
    wrote = [i for i, s in enumerate(free) if "Question:" in s.completion]
    assert wrote, [s.completion for s in free]
    for i, (a, b) in enumerate(zip(free, stopped)):
        assert "Question:" not in b.completion
        if i in wrote:
            assert b.finish_reason == "stop" and b.completion == a.completion[: a.completion.index("Question:")]
            assert "Question:" in tok.decode(b.completion_ids)
            assert b.completion_ids == a.completion_ids[: len(b.completion_ids)]
        else:
            assert (b.completion, b.finish_reason) == (a.completion, a.finish_reason)
    assert free[0].sample_id != stopped[0].sample_id  # stop strings are part of the sampling params


def test_a_prompt_longer_than_the_context_is_a_clear_error(trained_root):
    from restem.sampling import sampler
    from restem.sampling.engines import SamplingParams, TransformersEngine
    from restem.workspace import model_dir

    root, _ = trained_root
    engine = TransformersEngine(*_load(model_dir(0, root)))
    long = [{"problem_id": "p-long", "prompt": "1+" * 20 + "1="}, {"problem_id": "p-short", "prompt": "1+1="}]
    with pytest.raises(RestemError, match=r"problem p-long: its prompt of 43 tokens plus max_new_tokens=24 exceeds "
                                          r"the model's 48 positions; lower .*max_new_tokens.*shorten the prompt"):
        sampler.sample(engine, long, 1, SamplingParams(0.0, 24), 0, 1, "grow", "policy")


# --------------------------------------------------------------------- sampled tokens are the training tokens

CHAR_CHAT = "<s>{% for m in messages %}{{ m['content'] }}{% endfor %}"  # a chat template for the char tokenizer


def _loop_until_improve(root: Path, spec: dict, monkeypatch) -> tuple[list, dict, list, object]:
    """grow@1, all-correct scores, filter@1 and improve@1 (its training call captured) in `root`; returns the
    kept rows as Improve encoded them, the prompt ids each request was sampled with, and the samples."""
    from restem.schemas.io import read_rows, write_rows
    from restem.schemas.tables import Sample, Score
    from restem.stages import filter as filter_stage
    from restem.stages import grow, improve
    from restem.training import sft
    from restem.workspace import iter_dir

    raw = copy.deepcopy(TINY)
    raw["prompt"].update(spec)
    raw["filter"].update({"max_per_problem": 4, "dedup": "none", "keep_truncated": True})  # every sample kept
    params = Params.model_validate(raw)
    sent: dict[str, tuple] = {}
    make = grow.make_engine

    def recording_engine(*args, **kwargs):
        engine = make(*args, **kwargs)
        generate = engine.generate

        def record(requests, sampling, progress=""):
            sent.update({r.key: r.ids for r in requests})
            return generate(requests, sampling, progress)
        engine.generate = record
        return engine

    monkeypatch.setattr(grow, "make_engine", recording_engine)
    grow.run(params, 1, 0, root)
    samples = read_rows(iter_dir(1, root) / "samples.parquet", Sample)
    write_rows(iter_dir(1, root) / "scores.parquet", Score, [Score(
        sample_id=s["sample_id"], problem_id=s["problem_id"], iteration=1, verifier="test", reward=1.0, correct=True,
        verdict="correct", extracted="x", steps_valid=None) for s in samples])
    filter_stage.run(params, 1, root)
    captured = {}

    def capture(model, tokenizer, pairs, train, max_len, **kwargs):
        captured.update(tokenizer=tokenizer, pairs=pairs, max_len=max_len, spec=kwargs["spec"])
        return [{"step": 1, "loss": 1.0, "lr": 0.0}]

    monkeypatch.setattr(improve, "train_sft", capture)
    improve.run(params, 1, 0, root)
    tok = captured["tokenizer"]
    encoded = sft.encode_pairs(tok, captured["pairs"], 10_000, captured["spec"])
    return encoded, sent, samples, tok


def _check_trained_as_sampled(root, spec, monkeypatch) -> tuple[int, int]:
    """Every kept sample's training ids are its request's prompt ids + its sampled ids; returns (kept rows, rows
    whose re-tokenised text would have given other ids)."""
    from restem.schemas.io import read_rows
    from restem.schemas.tables import Kept
    from restem.workspace import iter_dir

    encoded, sent, samples, tok = _loop_until_improve(root, spec, monkeypatch)
    kept = read_rows(iter_dir(1, root) / "kept.parquet", Kept)
    by_id = {s["sample_id"]: s for s in samples}
    assert len(kept) == len(samples) == len(encoded) and kept
    differ = 0
    for row, (ids, n_prompt) in zip(kept, encoded):
        sample = by_id[row["sample_id"]]
        assert row["completion_ids"] == sample["completion_ids"]
        assert sample["completion_tokens"] == len(sample["completion_ids"])
        assert ids == list(sent[row["problem_id"]]) + sample["completion_ids"], row
        assert n_prompt == len(sent[row["problem_id"]]) == sample["prompt_tokens"]
        old = training_ids(tok, PromptParams(**spec), row["prompt"], None, row["completion"])[0]
        if sample["finish_reason"] == "length":  # re-tokenising appends an EOS it never wrote
            old = old[:-1]
        differ += old != ids
    return len(kept), differ


def _workspace(tmp_path, trained_root, folder: Path | None = None) -> Path:
    from restem.workspace import model_dir, problems_dir

    root, _ = trained_root
    shutil.copytree(problems_dir(root), problems_dir(tmp_path))
    shutil.copytree(folder or model_dir(0, root), model_dir(0, tmp_path))
    return tmp_path


@pytest.mark.parametrize("style", ["plain", "chat"])
def test_bpe_chat_model_trains_on_exactly_the_sampled_ids(chat_model, trained_root, tmp_path, monkeypatch, style):
    root = _workspace(tmp_path, trained_root, chat_model)
    spec = {"style": style, "template": "What is {prompt}"}
    kept, differ = _check_trained_as_sampled(root, spec, monkeypatch)
    print(f"{style}: {differ} of {kept} kept rows would have trained on other ids when re-tokenised")
    # Sampling at temperature 1 from a byte-level BPE model writes non-canonical splits (and special tokens):
    # re-tokenising the decoded text, as Improve used to, would have trained other ids on some rows.
    assert differ > 0, kept


@pytest.mark.parametrize("spec", [{"style": "plain"}, {"style": "chat"}])
def test_char_model_trains_on_exactly_the_sampled_ids(trained_root, tmp_path, monkeypatch, spec):
    from restem.training.modeling import load_policy
    from restem.workspace import model_dir

    root = _workspace(tmp_path, trained_root)
    if spec["style"] == "chat":  # give the char tokenizer a chat template that writes its BOS itself
        model, tok = load_policy(model_dir(0, root))
        tok.chat_template = CHAR_CHAT
        shutil.rmtree(model_dir(0, root))
        model.save_pretrained(model_dir(0, root))
        tok.save_pretrained(model_dir(0, root))
    kept, differ = _check_trained_as_sampled(root, spec, monkeypatch)
    # One token per character: re-tokenising gives the same ids, so the default pipeline's models do not change.
    assert differ == 0


def test_a_nondefault_prompt_changes_sample_ids_and_resume_keys(tiny_params, tmp_path):
    from restem.sampling.engines import SamplingParams
    from restem.stages.grow import shard_key

    other = tiny_params.model_copy(update={"prompt": PromptParams(template=QA)})
    sampling = SamplingParams(0.8, 16)
    assert shard_key("m", sampling, tiny_params, 1, ["a"], tmp_path) != shard_key("m", sampling, other, 1, ["a"], tmp_path)
    assert SamplingParams(0.8, 16).as_dict() == {"temperature": 0.8, "max_new_tokens": 16, "top_p": 1.0, "top_k": 0}
    assert SamplingParams(0.8, 16, stop=("Q:",)).as_dict()["stop"] == ["Q:"]


def test_a_noncanonical_split_is_trained_as_sampled(chat_model):
    """Two tokens whose text is one merged token: re-tokenising gives the merged token, training_ids keeps the
    two the model sampled."""
    _, tok = _load(chat_model)
    merged = next(t for t in tok(" What is 2 plus 5?", add_special_tokens=False)["input_ids"]
                  if len(tok.decode([t])) >= 3)
    text = tok.decode([merged])
    split = tok(text[:1], add_special_tokens=False)["input_ids"] + tok(text[1:], add_special_tokens=False)["input_ids"]
    assert tok.decode(split) == text and split != [merged]
    sampled = split + [tok.eos_token_id]
    spec = PromptParams(style="chat")
    rendered = render(tok, spec, "What is 2 plus 5?")
    ids, n_prompt = training_ids(tok, spec, rendered, sampled, text)
    assert ids[n_prompt:] == sampled
    assert training_ids(tok, spec, rendered, None, text)[0][n_prompt:] == [merged, tok.eos_token_id]
