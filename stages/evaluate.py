"""Stage `evaluate`: every model of the loop on the held-out problems.

For iteration 0, each iteration in `loop.iterations` and each ReST step in `loop.steps`: greedy pass@1, the unbiased pass@k
estimator (Chen et al. 2021) and maj@k over k sampled completions, per test set and per difficulty,
and the rate of right answers reached through wrong steps. Writes
- `metrics/iterations/iter<i>.json`: one JSON per iteration, with the share of evaluation samples cut off at
  max_new_tokens per test set (`truncated`) and the Grow samples' truncation as the filter counted it
  (`grow_truncated`: samples, share, kept);
- `metrics/summary.json`: the latest iteration, the base and the gain, under fixed keys, so that
  `dvc exp diff` between runs of different lengths shows how the headline numbers moved;
- `metrics/accuracy.csv`: one row per iteration, for `dvc plots`;
- `data/eval/iter<i>/{samples,scores}.parquet`: every evaluation sample and its verdict;
- `metrics/plots/accuracy_by_test.csv`: greedy pass@1 per model and test set (the other plot data, drawn from
  the whole workspace, is stage `plots`).
It is one stage, not one per iteration, so the summary has a single writer. Results are memoised per
iteration by a key of (model hash, test set, params, code): appending an iteration evaluates only the
new model.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash, file_hash
from restem.schemas.io import read_rows, write_json, write_rows, write_text
from restem.schemas.params import Params, ref_order
from restem.schemas.tables import Problem, Sample, Score, truncated
from restem import prompting
from restem.sampling import engines, sampler
from restem.stats import summarise
from restem.training import modeling
from restem.verifiers.batch import problem_view, score_samples
from restem.workspace import EVAL, ITERATION_METRICS, METRICS, log, model_dir, problems_dir
from restem.sampling.engines import SamplingParams, set_threads
from restem.sampling.shards import Shard, owned
from restem.training.modeling import model_hash, read_meta

FORMAT = 1  # bump when the metrics layout changes


def evaluate_model(params: Params, ref: str, problems: list[dict], root: Path) -> tuple[dict, list, list]:
    """Sample and score one model ('0', '2' or a step '1b') on the test problems; returns (metrics, samples,
    scores). A step's rows carry its iteration number; its policy hash tells it apart."""
    e = params.evaluate
    folder = model_dir(ref, root)
    policy = model_hash(folder)
    iteration = ref_order(ref)[0]
    engine = sampler.make_engine(params.grow.engine, folder, params.runtime.batch_size, params.runtime)
    stop = tuple(e.stop)
    greedy = sampler.sample(engine, problems, 1, SamplingParams(0.0, e.max_new_tokens, stop=stop), e.seed, iteration,
                            "eval", policy, label=f"evaluate@{ref} greedy", prompt=params.prompt, root=root)
    sampled = sampler.sample(engine, problems, e.samples, SamplingParams(e.temperature, e.max_new_tokens, e.top_p,
                                                                         stop=stop),
                             e.seed, iteration, "eval", policy, label=f"evaluate@{ref} k={e.samples}",
                             prompt=params.prompt, root=root)
    samples = [s.model_dump() for s in greedy + sampled]
    scores = [s.model_dump() for s in score_samples(params.score.verifier, samples, {
        p["problem_id"]: problem_view(p) for p in problems}, params.runtime.workers, params.score.timeout_s,
        extraction=params.score.extraction)]
    by_sample = {s["sample_id"]: s for s in scores}
    g_rows = {s["problem_id"]: by_sample[s["sample_id"]] for s in samples if s["temperature"] == 0}
    s_rows: dict[str, list[dict]] = defaultdict(list)
    for s in sorted(samples, key=lambda r: r["sample_index"]):
        if s["temperature"] > 0:
            s_rows[s["problem_id"]].append(by_sample[s["sample_id"]])
    cut = truncated_share(samples, problems)
    tests: dict[str, dict] = {}
    for subset in sorted({p["subset"] for p in problems}):
        group = [p for p in problems if p["subset"] == subset]
        metrics = summarise(group, g_rows, s_rows, e.samples)
        metrics["truncated"] = cut[subset]
        levels = sorted({p["difficulty"] for p in group if p["difficulty"] is not None})
        if len(levels) > 1:
            metrics["by_difficulty"] = {
                str(d): summarise([p for p in group if p["difficulty"] == d], g_rows, s_rows, e.samples) for d in levels
            }
        tests[subset] = metrics
    meta = read_meta(folder)
    trained_on = (meta.params.get("rows") if meta else None)
    label = int(ref) if ref.isdigit() else ref
    return {"iteration": label, "model": policy, "test": tests, "trained_on_samples": trained_on}, samples, scores


def truncated_share(samples: Sequence[dict], problems: Sequence[dict]) -> dict[str, float | None]:
    """Per test set, the share of its evaluation samples (greedy and sampled) cut off at max_new_tokens."""
    subset_of = {p["problem_id"]: p["subset"] for p in problems}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for s in samples:
        c = counts[subset_of[s["problem_id"]]]
        c[0] += truncated(s)
        c[1] += 1
    return defaultdict(lambda: None, {k: round(cut / n, 6) for k, (cut, n) in counts.items()})


def grow_truncation(root: Path, ref: str) -> dict | None:
    """The Grow samples of model `ref`'s iteration cut off at max_new_tokens, as its filter counted them
    (metrics/filter/iter<ref>.json: samples, share, kept); None for the base model or before the filter ran."""
    path = root / METRICS / "filter" / f"iter{ref}.json"
    return json.loads(path.read_text()).get("truncated") if path.is_file() else None


def eval_key(params: Params, iteration: str, root: Path) -> str:
    """What an iteration's metrics depend on: if unchanged, the stored result is reused."""
    # The code that makes the metrics: sampling, scoring, every verifier, and this module.
    from restem import verifiers

    code = [Path(m.__file__) for m in (engines, sampler, modeling, prompting)] + [Path(__file__)]
    if params.grow.engine == "vllm":  # only then, so keys of transformers runs stay as they were
        code.append(Path(engines.__file__).with_name("vllm_engine.py"))
    code += sorted(Path(verifiers.__file__).parent.glob("*.py"))
    # The engine's device and dtype (runtime.precision, runtime.vllm_dtype); the transformers engine in float32 on
    # the CPU adds nothing, so the keys of such runs stay as they were.
    numerics = sampler.numerics(params.grow.engine, params.runtime)
    extra = [] if numerics == {"device": "cpu", "dtype": "float32"} else [numerics]
    return content_hash(
        FORMAT, model_hash(model_dir(iteration, root)), file_hash(problems_dir(root) / "test.parquet"),
        params.evaluate.model_dump(), params.grow.engine, params.score.model_dump(), [file_hash(p) for p in code],
        *extra, *prompting.prompt_key(params.prompt, root),
    )


def _headline(metrics: dict, k: int) -> dict:
    return {subset: {key: m[key] for key in ("pass@1", f"pass@{k}", f"maj@{k}", "wrong_steps_rate")}
            for subset, m in metrics["test"].items()}


def _accuracy_csv(all_metrics: list[dict], k: int) -> str:
    columns = ["iteration"]
    rows = []
    for m in all_metrics:
        row = {"iteration": m["iteration"]}
        for subset, values in sorted(m["test"].items()):
            for key in ("pass@1", f"pass@{k}", f"maj@{k}"):
                row[f"{subset} {key}"] = values[key]
        rows.append(row)
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _by_test_csv(all_metrics: list[dict], problems: Sequence[dict]) -> str:
    """Long rows (iteration, test set, difficulty, greedy pass@1): the accuracy-per-difficulty picture,
    one line per model (template `plots/templates/lines_by_iteration.json`)."""
    levels: dict[str, set] = defaultdict(set)
    for p in problems:
        levels[p["subset"]].add(p["difficulty"])
    rows = []
    for m in all_metrics:
        for subset, values in m["test"].items():
            level = next(iter(levels[subset])) if len(levels[subset]) == 1 else None
            rows.append({"iteration": f"iter{m['iteration']}", "test": subset,
                         "difficulty": "" if level is None else level, "pass@1": values["pass@1"]})
    rows.sort(key=lambda r: (ref_order(r["iteration"][4:]), r["difficulty"] if r["difficulty"] != "" else -1,
                             r["test"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["iteration", "test", "difficulty", "pass@1"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _drop_stale(per_iter_dir: Path, eval_dir: Path, models: list[str]) -> None:
    """Remove results of models no longer in the loop (outputs persist between runs)."""
    import shutil

    for stale in per_iter_dir.glob("iter*.json") if per_iter_dir.exists() else []:
        if stale.stem[4:] not in models:
            stale.unlink()
    for stale in eval_dir.glob("iter*") if eval_dir.exists() else []:
        if stale.name[4:] not in models:
            shutil.rmtree(stale)


def run(params: Params, root: Path = Path("."), shard: Shard | None = None, merge: bool = False) -> dict:
    """Evaluate the base, every loop iteration and every step, in run order; returns the summary.

    With `shard` (i/n), only that contiguous share of the models is evaluated into its memo (no
    summary; returns {}); with `merge`, nothing is evaluated: every model's memo must be up to date,
    and the summary, CSV and plots are written from them. See restem/sampling/shards.py.
    """
    set_threads(params.runtime.threads)
    problems = read_rows(problems_dir(root) / "test.parquet", Problem)
    models = params.loop.models()
    k = params.evaluate.samples
    per_iter_dir, eval_dir = root / ITERATION_METRICS, root / EVAL
    if shard is None:  # shards leave other models' results alone
        _drop_stale(per_iter_dir, eval_dir, models)
    mine = [models[n] for n in owned(len(models), shard)]
    all_metrics = []
    for i in mine:
        key = eval_key(params, i, root)
        path = per_iter_dir / f"iter{i}.json"
        if path.exists() and (eval_dir / f"iter{i}" / "scores.parquet").exists():
            stored = json.loads(path.read_text())
            if stored.get("eval_key") == key:
                log(f"evaluate@{i}: unchanged, reusing {path}")
                # Not part of the memo: the filter's count may change while the model stays the same.
                grow = grow_truncation(root, i)
                if stored.get("grow_truncated") != grow:
                    stored["grow_truncated"] = grow
                    write_json(path, stored)
                all_metrics.append(stored)
                continue
        if merge:
            raise RestemError(f"{path}: model iter{i} has no up-to-date evaluation; run the --shard i/n that holds it "
                              "(same params), or run without --merge to evaluate it here")
        metrics, samples, scores = evaluate_model(params, i, problems, root)
        metrics["eval_key"] = key
        metrics["grow_truncated"] = grow_truncation(root, i)
        write_rows(eval_dir / f"iter{i}" / "samples.parquet", Sample, samples)
        write_rows(eval_dir / f"iter{i}" / "scores.parquet", Score, scores)
        write_json(path, metrics)
        heads = ", ".join(f"{s} pass@1 {m['pass@1']:.3f}" for s, m in metrics["test"].items())
        log(f"evaluate@{i}: {heads}")
        all_metrics.append(metrics)
    if shard is not None:
        log(f"evaluate: shard {shard} done ({', '.join(f'iter{i}' for i in mine) or 'no models'}); merge with --merge")
        return {}
    latest, base = all_metrics[-1], all_metrics[0]
    head_latest, head_base = _headline(latest, k), _headline(base, k)
    gain = {s: {key: (None if v is None or head_base[s][key] is None else round(v - head_base[s][key], 6))
                for key, v in vals.items()} for s, vals in head_latest.items()}
    summary = {"iterations": len(params.loop.iterations), "steps": len(params.loop.steps), "latest": head_latest, "base": head_base, "gain": gain}
    write_json(root / METRICS / "summary.json", summary)
    write_text(root / METRICS / "accuracy.csv", _accuracy_csv(all_metrics, k))
    write_text(root / METRICS / "plots" / "accuracy_by_test.csv", _by_test_csv(all_metrics, problems))
    return summary


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("evaluate")
