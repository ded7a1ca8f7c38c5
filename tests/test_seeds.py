"""Intervals over seeds and over test problems (restem.stats), the seeds report over hand-made runs, the queue
plan of `restem seeds run`, and the training environment in a model's restem.json."""

import json
import math
import statistics

import pytest

from restem.query.seeds import (SEED_KEYS, _seed_list, bootstrap_rows, plan, queue_command, read_iterations, report,
                                seed_overrides, seed_rows)
from restem.schemas.errors import RestemError
from restem.stats import bootstrap_interval, mean_interval, quantile, t_cdf, t_quantile


@pytest.mark.parametrize("df, table", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)])
def test_t_quantile_matches_the_printed_table(df, table):
    assert t_quantile(0.975, df) == pytest.approx(table, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-table, abs=5e-4)


def test_t_cdf_known_values():
    assert t_cdf(0.0, 3) == 0.5
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert t_cdf(2.0, 5) == pytest.approx(0.94903026, abs=1e-7)
    assert t_cdf(-2.0, 5) == pytest.approx(1 - 0.94903026, abs=1e-7)
    # many degrees of freedom: close to the normal's 1.95996
    assert t_quantile(0.975, 2000) == pytest.approx(1.9611, abs=1e-3)


def test_mean_interval_known_values():
    # the in_dist gains of three seeds: +47, +26.5, +16 points
    s = mean_interval([0.47, 0.265, 0.16])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.298333, abs=1e-6)
    assert s["std"] == pytest.approx(statistics.stdev([0.47, 0.265, 0.16]))
    half = 4.302653 * s["std"] / math.sqrt(3)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((s["mean"] - half, s["mean"] + half), abs=1e-6)
    assert (s["min"], s["max"]) == (0.16, 0.47)
    one = mean_interval([0.5])
    assert one["mean"] == 0.5 and one["std"] is None and one["ci_low"] is None
    with pytest.raises(ValueError):
        mean_interval([])
    # easy-to-hard, 8 digits after five iterations, three seeds: the t interval reaches below 0 unless cut
    raw, cut = mean_interval([0.85, 0.48, 0.03]), mean_interval([0.85, 0.48, 0.03], bounds=(0.0, 1.0))
    assert raw["ci_low"] < 0 < cut["ci_high"] and raw["ci_high"] > 1
    assert (cut["ci_low"], cut["ci_high"]) == (0.0, 1.0) and cut["mean"] == raw["mean"]
    tight, free = mean_interval([0.5, 0.52, 0.54], bounds=(0.0, 1.0)), mean_interval([0.5, 0.52, 0.54])
    assert (tight["ci_low"], tight["ci_high"]) == (free["ci_low"], free["ci_high"])


def test_seeds_report_cuts_rate_intervals_to_their_range(tmp_path):
    runs = {str(i): {"0": {"d8": 0.0}, "5": {"d8": v}} for i, v in enumerate((0.85, 0.48, 0.03))}
    rows = {(r["iteration"], r["metric"]): r for r in seed_rows(runs)}
    assert rows[("5", "pass@1")]["ci_low"] == 0.0 and rows[("5", "pass@1")]["ci_high"] == 1.0
    gain, raw = rows[("5", "pass@1 gain")], mean_interval([0.85, 0.48, 0.03])  # a gain is cut to [-1, 1]
    assert gain["ci_low"] == pytest.approx(raw["ci_low"], abs=1e-6) and gain["ci_high"] == 1.0
    counts = {str(i): {"0": {"d8": 10.0 * i}} for i in range(3)}  # not a rate: no cut
    assert {r["metric"]: r for r in seed_rows(counts)}["pass@1"]["ci_low"] < 0


def test_quantile_interpolates_like_numpy():
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([4, 1, 3, 2], 0.25) == 1.75
    assert quantile([7], 0.9) == 7


def test_bootstrap_is_deterministic_and_contains_the_estimate():
    x = [1.0] * 13 + [0.0] * 7
    a = bootstrap_interval({"x": x}, lambda c: sum(c["x"]) / len(c["x"]), 2000, seed=0)
    b = bootstrap_interval({"x": x}, lambda c: sum(c["x"]) / len(c["x"]), 2000, seed=0)
    assert a == b and a["estimate"] == 0.65
    assert a["ci_low"] < 0.65 < a["ci_high"]
    # binomial standard error sqrt(.65*.35/20) = 0.107: the 95 % interval is about +-0.21
    assert 0.35 < a["ci_high"] - a["ci_low"] < 0.5
    c = bootstrap_interval({"x": x}, lambda c: sum(c["x"]) / len(c["x"]), 2000, seed=1)
    assert c != a
    with pytest.raises(ValueError):
        bootstrap_interval({"x": x, "y": x[:-1]}, lambda c: 0.0)


def test_paired_bootstrap_draws_the_same_problems_for_both():
    base = [0.0, 1.0] * 10
    better = [1.0] * 20  # wins exactly on every problem the base missed
    paired = bootstrap_interval({"x": better, "b": base}, lambda c: sum(c["x"]) / 20 - sum(c["b"]) / 20, 500)
    assert paired["estimate"] == 0.5 and 0.25 < paired["ci_low"] < 0.5 < paired["ci_high"] < 0.75
    same = bootstrap_interval({"x": base, "b": base}, lambda c: sum(c["x"]) - sum(c["b"]), 500)
    assert same["ci_low"] == same["ci_high"] == 0.0  # the same problems for both: a tie stays a tie


def _write_run(root, values: dict[str, dict[str, float]]):
    folder = root / "metrics/iterations"
    folder.mkdir(parents=True)
    for ref, tests in values.items():
        (folder / f"iter{ref}.json").write_text(json.dumps({"iteration": int(ref), "test": {
            t: {"pass@1": v, "maj@8": v / 2, "n": 200} for t, v in tests.items()}}))
    return root


RUNS = {  # the three seeds (base, iteration 1, iteration 2)
    "seed-0": {"0": {"in_dist": 0.290, "harder": 0.0}, "1": {"in_dist": 0.660, "harder": 0.0},
               "2": {"in_dist": 0.760, "harder": 0.0}},
    "seed-1": {"0": {"in_dist": 0.715, "harder": 0.115}, "1": {"in_dist": 0.990, "harder": 0.0},
               "2": {"in_dist": 0.980, "harder": 0.0}},
    "seed-2": {"0": {"in_dist": 0.830, "harder": 0.110}, "1": {"in_dist": 0.990, "harder": 0.0},
               "2": {"in_dist": 0.990, "harder": 0.0}},
}


def test_report_over_three_hand_made_runs(tmp_path):
    runs = {name: read_iterations(_write_run(tmp_path / name, v)) for name, v in RUNS.items()}
    rows = {(r["iteration"], r["test"], r["metric"]): r for r in seed_rows(runs)}
    assert len(rows) == 3 * 2 + 2 * 2  # pass@1 for 3 models, gain for 2, each on 2 test sets
    p = rows[("2", "in_dist", "pass@1")]
    assert p["n"] == 3 and p["mean"] == pytest.approx((0.76 + 0.98 + 0.99) / 3, abs=1e-6)
    assert (p["min"], p["max"]) == (0.76, 0.99)
    g = rows[("2", "in_dist", "pass@1 gain")]
    gains = [0.76 - 0.29, 0.98 - 0.715, 0.99 - 0.83]
    assert g["mean"] == pytest.approx(statistics.mean(gains), abs=1e-6)
    assert g["std"] == pytest.approx(statistics.stdev(gains), abs=1e-6)
    half = 4.302653 * statistics.stdev(gains) / math.sqrt(3)
    assert g["ci_low"] == pytest.approx(statistics.mean(gains) - half, abs=1e-5)
    # paired per seed: narrower than what the unpaired spread of iteration 2 and the base would give
    h = rows[("1", "harder", "pass@1 gain")]
    assert h["mean"] == pytest.approx(-0.075, abs=1e-6) and h["ci_high"] > 0 > h["ci_low"]
    assert ("0", "in_dist", "pass@1 gain") not in rows
    maj = {(r["iteration"], r["test"], r["metric"]): r for r in seed_rows(
        {name: read_iterations(tmp_path / name, "maj@8") for name in RUNS}, "maj@8")}
    assert maj[("2", "in_dist", "maj@8 gain")]["mean"] == pytest.approx(statistics.mean(gains) / 2, abs=1e-6)


def test_report_reads_working_trees_and_labels_runs(tmp_path):
    _write_run(tmp_path, RUNS["seed-1"])
    with pytest.raises(RestemError, match="one run .the working tree. and --no-bootstrap"):
        report(tmp_path, [None], bootstrap=False)
    with pytest.raises(RestemError, match=r"runs given twice: \['workspace'\]"):
        report(tmp_path, [None, None])
    # two runs with equal numbers: zero spread, an interval of no width
    same = read_iterations(tmp_path)
    rows = {(r["iteration"], r["test"], r["metric"]): r for r in seed_rows({"a": same, "b": same})}
    assert rows[("1", "in_dist", "pass@1")]["n"] == 2 and rows[("1", "in_dist", "pass@1")]["std"] == 0
    assert rows[("1", "in_dist", "pass@1 gain")]["ci_low"] == rows[("1", "in_dist", "pass@1 gain")]["ci_high"]
    with pytest.raises(RestemError, match="--metric 'pass@9': not in"):
        read_iterations(tmp_path, "pass@9")
    with pytest.raises(RestemError, match="the bootstrap over test problems is of greedy pass@1"):
        report(tmp_path, [None], metric="maj@8")
    with pytest.raises(RestemError, match="no runs to report"):
        report(tmp_path, [])


def test_report_over_workspace_folders_from_the_cli(tmp_path, monkeypatch):
    """`restem seeds report --dir A --dir B`: runs in other workspaces (clones, other machines) join as runs."""
    from typer.testing import CliRunner

    from restem.cli.main import app

    for name, values in RUNS.items():
        _write_run(tmp_path / name, values)
    monkeypatch.chdir(tmp_path)
    args = ["seeds", "report", "--format", "json"] + [x for name in RUNS for x in ("--dir", name)]
    got = CliRunner().invoke(app, args)
    assert got.exit_code == 0, got.output
    rows = {(r["iteration"], r["test"], r["metric"]): r for r in json.loads(got.output)}
    want = {(r["iteration"], r["test"], r["metric"]): r for r in seed_rows(
        {name: read_iterations(tmp_path / name) for name in RUNS})}
    assert rows.keys() == want.keys() and all(rows[k]["mean"] == want[k]["mean"] for k in want)
    assert rows[("2", "in_dist", "pass@1 gain")]["run"] == "3 runs"
    # --each: every run's own figures and gains after the aggregate, one row per (run, model, test set, metric)
    got = CliRunner().invoke(app, args + ["--each"])
    assert got.exit_code == 0, got.output
    each = {(r["run"], r["iteration"], r["test"], r["metric"]): r for r in json.loads(got.output) if r["method"] == "run"}
    assert len(each) == 3 * (3 * 2 + 2 * 2)
    for name, values in RUNS.items():
        run = str((tmp_path / name).resolve())
        assert each[(run, "2", "in_dist", "pass@1")]["mean"] == values["2"]["in_dist"]
        assert each[(run, "2", "in_dist", "pass@1 gain")]["mean"] == pytest.approx(
            values["2"]["in_dist"] - values["0"]["in_dist"], abs=1e-6)
        assert each[(run, "1", "harder", "pass@1")]["n"] == 1 and each[(run, "1", "harder", "pass@1")]["ci_low"] is None
    # the per-run gains are the values the aggregate's paired interval is over
    gains = [each[(str((tmp_path / n).resolve()), "2", "in_dist", "pass@1 gain")]["mean"] for n in RUNS]
    assert rows[("2", "in_dist", "pass@1 gain")]["mean"] == pytest.approx(statistics.mean(gains), abs=1e-6)
    bad = CliRunner().invoke(app, ["seeds", "report", "--dir", "seed-0", "--dir", "nowhere"])
    assert bad.exit_code != 0 and "--dir" in bad.output and "nowhere" in bad.output


def _eval_tables(root, correct: dict[str, list[bool]], test="in_dist"):
    """data/eval/iter<ref>/ and data/problems/test.parquet by hand: one greedy and one sampled row per problem."""
    from restem.schemas.io import write_rows
    from restem.schemas.tables import Problem, Sample, Score

    n = len(next(iter(correct.values())))
    ids = [f"p{i:03d}" for i in range(n)]
    write_rows(root / "data/problems/test.parquet", Problem, [
        dict(problem_id=i, split="test", subset=test, prompt=f"{i}=", reference="1", source="hand") for i in ids])
    for ref, values in correct.items():
        samples, scores = [], []
        for i, ok in zip(ids, values):
            for temp, right in ((0.0, ok), (1.0, not ok)):  # the sampled row says the opposite: must be ignored
                sid = f"{ref}-{i}-{temp}"
                samples.append(dict(sample_id=sid, problem_id=i, iteration=int(ref), purpose="eval", policy=ref,
                                    engine="hand", sample_index=0, seed=0, temperature=temp, prompt="", completion="",
                                    finish_reason="stop", prompt_tokens=1, completion_tokens=1))
                scores.append(dict(sample_id=sid, problem_id=i, iteration=int(ref), verifier="hand", reward=float(right),
                                   correct=right, verdict="correct" if right else "incorrect", extracted="1",
                                   steps_valid=None))
        write_rows(root / f"data/eval/iter{ref}/samples.parquet", Sample, samples)
        write_rows(root / f"data/eval/iter{ref}/scores.parquet", Score, scores)


def test_bootstrap_rows_on_a_hand_made_eval_table(tmp_path):
    base = [i % 4 == 0 for i in range(40)]  # 10 of 40
    it1 = [i % 4 == 0 or i % 3 == 0 for i in range(40)]  # those and 10 more: 20 of 40
    _eval_tables(tmp_path, {"0": base, "1": it1})
    rows = bootstrap_rows(tmp_path, ["0", "1"], 2000, seed=0)
    again = bootstrap_rows(tmp_path, ["0", "1"], 2000, seed=0)
    assert rows == again
    by = {(r["iteration"], r["metric"]): r for r in rows}
    assert by[("0", "pass@1")]["mean"] == 0.25 and by[("1", "pass@1")]["mean"] == 0.5
    gain = by[("1", "pass@1 gain")]
    assert gain["mean"] == 0.25 and gain["n"] == 40
    for r in rows:
        assert r["ci_low"] <= r["mean"] <= r["ci_high"], r
    # paired: the iteration never loses a problem the base had, so no resample can show a loss
    assert gain["ci_low"] > 0
    assert gain["ci_high"] - gain["ci_low"] < by[("1", "pass@1")]["ci_high"] - by[("1", "pass@1")]["ci_low"]


def test_seed_overrides_and_queue_plan():
    assert seed_overrides(3) == {k: "3" for k in SEED_KEYS}
    o = seed_overrides(3, ["reward_model.seed={seed}", "grow.seed=7", "runtime.threads=2"])
    assert o["reward_model.seed"] == "3" and o["grow.seed"] == "7" and o["runtime.threads"] == "2"
    with pytest.raises(RestemError, match="--set 'oops'"):
        seed_overrides(1, ["oops"])
    assert queue_command("seed-3", {"grow.seed": "3"}) == ["dvc", "exp", "run", "--queue", "-n", "seed-3", "-S",
                                                          "grow.seed=3"]
    assert queue_command("t1-3", {}, force=True) == ["dvc", "exp", "run", "--queue", "-n", "t1-3", "-f"]
    assert _seed_list(["0-2", "5,7"]) == [0, 1, 2, 5, 7]
    with pytest.raises(RestemError, match="given twice"):
        _seed_list(["0-2", "1"])
    with pytest.raises(RestemError, match="neither a seed"):
        _seed_list(["x"])
    def params(seed):  # params.yaml as `dvc exp show --json` gives it back: a tree of parsed values
        return {"base": {"train": {"seed": seed}}, "grow": {"seed": seed}, "improve": {"seed": seed},
                "evaluate": {"seed": seed}, "runtime": {"threads": 1}}

    existing = {"seed-0": {"state": None, "params": params(0)},
                "seed-1": {"state": "failed", "params": params(1)},
                "seed-2": {"state": "queued", "params": params(2)}}
    to_queue, skipped = plan([0, 1, 2, 3], [], "seed", existing)
    assert [n for n, _ in to_queue] == ["seed-1", "seed-3"]
    assert skipped == [("seed-0", "done"), ("seed-2", "queued")]
    with pytest.raises(RestemError, match="seed-0 exists with runtime.threads=1, not '2'"):
        plan([0], ["runtime.threads=2"], "seed", existing)
    with pytest.raises(RestemError, match="--prefix 'a b'"):
        plan([0], [], "a b", existing)
    # a new key (dvc's +key=value) compares against the experiment's value of that key
    existing["seed-0"]["params"]["loop"] = {"iterations": {"1": {"prev": 0, "init": 0}, "3": {"prev": 2, "init": 0}}}
    assert plan([0], ["+loop.iterations.3={prev: 2, init: 0}"], "seed", existing) == ([], [("seed-0", "done")])


def test_restem_json_records_the_training_environment_outside_the_model_hash(tmp_path):
    import torch

    from restem.schemas.params import Params
    from restem.training.modeling import build_char_tokenizer, build_model, read_meta, save_policy
    from conftest import TINY

    tok = build_char_tokenizer()
    model = build_model(tok, Params.model_validate(TINY).base.model, seed=0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = save_policy(model, tok, tmp_path / "a", {"iteration": 0})
        torch.set_num_threads(2)
        two = save_policy(model, tok, tmp_path / "b", {"iteration": 0})
    finally:
        torch.set_num_threads(before)
    env = read_meta(tmp_path / "a").environment
    assert env["torch"] == torch.__version__ and env["threads"] == 1 and env["device"] == "cpu" and env["cpu"]
    import transformers

    assert env["transformers"] == transformers.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512, DEFAULT
    assert read_meta(tmp_path / "b").environment["threads"] == 2
    # same weights, other thread count: the same model_hash (so the same sample ids downstream); only restem.json
    # differs
    assert one.model_hash == two.model_hash
    assert (tmp_path / "a/restem.json").read_bytes() != (tmp_path / "b/restem.json").read_bytes()
