"""`restem seeds run` and `restem seeds report`: the pipeline over several seeds as DVC experiments, and
pass@1 with its spread and 95 % intervals over them.

A seed changes SEED_KEYS: the base model's initialisation and shuffling, Grow's sampling, Improve's
shuffling and Evaluate's k samples. `problems.seed` stays fixed, so every seed trains on the same
demonstrations and pool and is measured on the same test problems: the spread is that of training and
sampling alone, and the gain over the base can be paired per seed on identical problems. (Add
`--set problems.seed={seed}` to let the data draw vary too; then the test sets differ between seeds.)

Each seed is one experiment named `<prefix>-<seed>`, queued with `dvc exp run --queue -S key=value -n name`
and run with `dvc exp run --run-all`. A rerun queues only seeds whose experiment is missing or failed;
one that exists with other params is an error (pick another --prefix or `dvc exp remove` it).

The report reads each run's `metrics/iterations/iter<k>.json` the way `restem sql --rev` reads a
revision (`restem.query.rev`), so any branch, commit or past experiment can join with `--rev`. With one
run it bootstraps over the test problems instead (`data/eval/iter<k>/`). The math is in `restem.stats`.
"""

from __future__ import annotations

import json
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from restem.schemas.errors import RestemError
from restem.workspace import DATA, EVAL, ITERATION_METRICS, METRICS, PROBLEMS

# The params one seed sets (all to the seed's value); problems.seed is left alone (module docstring).
SEED_KEYS = ("base.train.seed", "grow.seed", "improve.seed", "evaluate.seed")
# dvc exp show states of an experiment that need no new queue entry.
_PRESENT = {None, "success", "queued", "running"}


def seed_overrides(seed: int, sets: list[str] = (), keys: tuple[str, ...] = SEED_KEYS) -> dict[str, str]:
    """The `-S key=value` params of one seed: each of `keys` set to the seed, then each `--set key=value`
    with `{seed}` in the value replaced by it (a --set for a key of `keys` wins)."""
    out = {key: str(seed) for key in keys}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"\+?[A-Za-z_][\w.]*", key.strip()):  # +key: add a new key (dvc -S)
            raise RestemError(f"--set {item!r}: give key=value with a dotted params key, e.g. "
                              "--set reward_model.seed={seed}")
        out[key.strip()] = value.strip().replace("{seed}", str(seed))
    return out


def _lookup(tree: dict, dotted: str):
    """The value at a dotted params key (`loop.iterations.3` -> a mapping), None where it is absent."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def existing_experiments(root: Path) -> dict[str, dict]:
    """Experiments of the current commit by name: {name: {"state": ..., "params": params.yaml as a tree}}, from
    `dvc exp show --json` (params of params.yaml only)."""
    try:
        proc = subprocess.run(["dvc", "exp", "show", "--json", "--no-fetch"], cwd=root, capture_output=True,
                              text=True)
    except FileNotFoundError:
        raise RestemError("dvc: not found on PATH; activate restem's environment (it installs dvc)") from None
    if proc.returncode != 0:
        raise RestemError(f"dvc exp show failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}; "
                          "run it inside a git + DVC project with at least one commit")
    found: dict[str, dict] = {}
    for baseline in json.loads(proc.stdout or "[]"):
        for exp_range in baseline.get("experiments") or []:
            for exp in exp_range.get("revs") or []:
                name = exp.get("name")
                data = exp.get("data") or {}
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                state = (exp_range.get("executor") or {}).get("state")  # none once an experiment is done
                if name:
                    found[name] = {"state": state and state.lower(), "params": params}
    return found


def _same(value, wanted: str) -> bool:
    """Whether a params value read back from an experiment equals the `-S` text given for it."""
    import yaml

    return value == yaml.safe_load(wanted)


def plan(seeds: list[int], sets: list[str], prefix: str, existing: dict[str, dict]) -> tuple[list, list]:
    """(to_queue: [(name, overrides)], skipped: [(name, why)]). An existing experiment of a seed with other
    params is an error naming the differing key."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", prefix):
        raise RestemError(f"--prefix {prefix!r}: use letters, digits, '_', '.', '-' (it names git refs)")
    to_queue, skipped = [], []
    for seed in seeds:
        name, overrides = f"{prefix}-{seed}", seed_overrides(seed, sets)
        if name not in existing:
            to_queue.append((name, overrides))
            continue
        have = existing[name]
        differ = [k for k, v in overrides.items() if not _same(_lookup(have["params"], k.lstrip("+")), v)]
        if differ:
            key = differ[0]
            raise RestemError(f"experiment {name} exists with {key}={_lookup(have['params'], key.lstrip('+'))!r}, not "
                              f"{overrides[key]!r}; choose another --prefix or remove it (`dvc exp remove {name}`)")
        if have["state"] in _PRESENT:
            skipped.append((name, "queued" if have["state"] in ("queued", "running") else "done"))
        else:  # failed: queue it again under its name
            to_queue.append((name, overrides))
    return to_queue, skipped


def queue_command(name: str, overrides: dict[str, str], force: bool = False) -> list[str]:
    """`dvc exp run --queue` of one seed; `force` (-f): every stage runs, none is taken from the run cache or the
    baseline's outputs (needed when what differs is untracked by DVC, e.g. runtime.threads)."""
    cmd = ["dvc", "exp", "run", "--queue", "-n", name] + (["-f"] if force else [])
    for key, value in overrides.items():
        cmd += ["-S", f"{key}={value}"]
    return cmd


def run_seeds_command(
    seeds: list[str] = typer.Argument(..., help="the seeds: 0 1 2 3 4, or a range 0-4"),
    sets: list[str] = typer.Option([], "--set", help="extra key=value per experiment; {seed} is replaced by the seed"),
    prefix: str = typer.Option("seed", "--prefix", help="experiment names are <prefix>-<seed>"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="experiments run at once (each uses runtime.threads)"),
    run: bool = typer.Option(True, "--run/--queue-only", help="run the queue after queueing"),
    force: bool = typer.Option(False, "--force", "-f", help="run every stage of a new experiment, reusing no "
                               "output of equal params (to compare what DVC does not track, e.g. runtime.threads)"),
) -> None:
    """Queue the pipeline once per seed as DVC experiments and run them; done seeds are not queued again."""
    from restem.cli.errors import user_errors

    with user_errors():
        to_queue, skipped = plan(_seed_list(seeds), sets, prefix, existing_experiments(Path(".")))
    for name, why in skipped:
        typer.echo(f"{name}: {why}, not queued again")
    for name, overrides in to_queue:
        cmd = queue_command(name, overrides, force)
        typer.echo(" ".join(cmd))
        if subprocess.call(cmd):
            raise typer.Exit(1)
    if run and (to_queue or any(why == "queued" for _, why in skipped)):
        raise typer.Exit(subprocess.call(["dvc", "exp", "run", "--run-all", "-j", str(jobs)]))


def _seed_list(seeds: list[str]) -> list[int]:
    """Seeds from the command line: integers or inclusive ranges `a-b`, spaces or commas between."""
    out = []
    for item in seeds:
        for part in str(item).replace(",", " ").split():
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m or (m[2] is not None and int(m[2]) < int(m[1])):
                raise RestemError(f"seeds: {part!r} is neither a seed (0) nor a range (0-4)")
            out += range(int(m[1]), int(m[2] or m[1]) + 1)
    if len(set(out)) != len(out):
        raise RestemError(f"seeds {' '.join(seeds)}: a seed is given twice")
    return out


# ---- the report ----

def _metrics_or_eval(bootstrap: bool):
    pattern = re.compile(rf"^({ITERATION_METRICS}/|{EVAL}/|{PROBLEMS}/test\.parquet$)" if bootstrap
                         else rf"^{ITERATION_METRICS}/")
    return lambda rel: bool(pattern.match(rel))


@contextmanager
def _run_folder(root: Path, rev, bootstrap: bool) -> Iterator[Path]:
    if rev is None:
        yield root
        return
    if isinstance(rev, Path):  # --dir: another workspace's outputs (a clone, another machine's copy)
        if not (rev / ITERATION_METRICS).is_dir():
            raise RestemError(f"--dir {rev}: no {ITERATION_METRICS}/ there; give the root of a workspace whose "
                              "pipeline has run (its metrics/ and, for the bootstrap, data/eval/)")
        yield rev
        return
    from restem.query.rev import materialise_rev

    with materialise_rev(root, rev, only=_metrics_or_eval(bootstrap),
                         tops=(METRICS, DATA) if bootstrap else (METRICS,)) as folder:
        yield folder


def read_iterations(folder: Path, metric: str = "pass@1") -> dict[str, dict]:
    """{model ref: {test set: metric}} from `metrics/iterations/iter<ref>.json` below `folder`."""
    files = sorted((folder / ITERATION_METRICS).glob("iter*.json"))
    if not files:
        raise RestemError(f"{folder / ITERATION_METRICS}: no iteration metrics; has the pipeline run there?")
    found = [json.loads(p.read_text()) for p in files]
    names = sorted({k for m in found for v in m["test"].values() for k, x in v.items() if isinstance(x, (int, float))})
    if metric not in names:
        raise RestemError(f"--metric {metric!r}: not in {folder / ITERATION_METRICS}; choose one of {names}")
    return {str(m["iteration"]): {t: v.get(metric) for t, v in m["test"].items()} for m in found}


def greedy_correct(folder: Path, ref: str) -> dict[str, dict[str, bool]]:
    """{test set: {problem_id: greedy answer correct}} from `data/eval/iter<ref>/` below `folder` (as Evaluate
    counts: a null verdict counts as wrong)."""
    from restem.schemas.io import read_rows
    from restem.schemas.tables import Problem, Sample, Score

    base = folder / EVAL / f"iter{ref}"
    for name in ("samples.parquet", "scores.parquet"):
        if not (base / name).exists():
            raise RestemError(f"{base / name}: missing; the bootstrap needs Evaluate's tables (`dvc pull` them)")
    subset = {p["problem_id"]: p["subset"] for p in read_rows(folder / PROBLEMS / "test.parquet", Problem)}
    correct = {s["sample_id"]: bool(s["correct"]) for s in read_rows(base / "scores.parquet", Score)}
    out: dict[str, dict[str, bool]] = {}
    for s in read_rows(base / "samples.parquet", Sample):
        if s["temperature"] == 0:
            out.setdefault(subset[s["problem_id"]], {})[s["problem_id"]] = correct[s["sample_id"]]
    return out


def seed_rows(runs: dict[str, dict[str, dict]], metric: str = "pass@1", level: float = 0.95) -> list[dict]:
    """Per model and test set, `metric` over runs (mean, spread, t interval) and its gain over the base of the
    same run (paired). `runs`: {label: read_iterations(...)}. When every value of the metric lies in [0, 1] it is
    taken as a rate: intervals are cut to [0, 1], those of gains to [-1, 1]."""
    from restem.schemas.refs import ref_order
    from restem.stats import mean_interval

    refs = sorted({r for it in runs.values() for r in it}, key=ref_order)
    rate = all(0 <= v <= 1 for it in runs.values() for t in it.values() for v in t.values() if v is not None)
    bounds, gain_bounds = ((0.0, 1.0), (-1.0, 1.0)) if rate else (None, None)
    rows = []
    for ref in refs:
        tests = sorted({t for it in runs.values() for t in it.get(ref, {})})
        for test in tests:
            have = [it for it in runs.values() if it.get(ref, {}).get(test) is not None]
            rows.append(_row(ref, test, metric, f"t {level:.0%} over seeds",
                             mean_interval([it[ref][test] for it in have], level, bounds)))
            paired = [it for it in have if ref != "0" and it.get("0", {}).get(test) is not None]
            if paired:
                rows.append(_row(ref, test, f"{metric} gain", f"t {level:.0%} over seeds paired",
                                 mean_interval([it[ref][test] - it["0"][test] for it in paired], level,
                                               gain_bounds)))
    return rows


def bootstrap_rows(folder: Path, refs: list[str], resamples: int, seed: int, level: float = 0.95) -> list[dict]:
    """Per model and test set of one run: pass@1 and its gain over the base, each with a percentile bootstrap
    interval over the test problems (the gain paired: the same resampled problems for both models)."""
    from restem.stats import bootstrap_interval

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    tables = {ref: greedy_correct(folder, ref) for ref in refs}
    method = f"bootstrap {resamples}x seed {seed}"
    rows = []
    for ref in refs:
        for test, by_problem in sorted(tables[ref].items()):
            ids = sorted(by_problem)
            col = [float(by_problem[i]) for i in ids]
            b = bootstrap_interval({"x": col}, lambda c: mean(c["x"]), resamples, seed, level)
            rows.append(_row(ref, test, "pass@1", method, {"n": len(ids), "mean": b["estimate"], "ci_low": b["ci_low"],
                                                           "ci_high": b["ci_high"]}))
            base = tables.get("0", {}).get(test)
            if ref != "0" and base is not None:
                if set(base) != set(ids):
                    raise RestemError(f"{EVAL}/iter{ref} and iter0 ({test}): not the same test problems")
                g = bootstrap_interval({"x": col, "b": [float(base[i]) for i in ids]},
                                       lambda c: mean(c["x"]) - mean(c["b"]), resamples, seed, level)
                rows.append(_row(ref, test, "pass@1 gain", method + " paired",
                                 {"n": len(ids), "mean": g["estimate"], "ci_low": g["ci_low"], "ci_high": g["ci_high"]}))
    return rows


def run_rows(label: str, iterations: dict[str, dict], metric: str = "pass@1") -> list[dict]:
    """One run's own figures (`iterations`: read_iterations(...)): per model and test set `metric` and its gain
    over the run's base, method `run`, n 1 and no interval; the rows of a per-seed table."""
    from restem.schemas.refs import ref_order

    rows = []
    for ref in sorted(iterations, key=ref_order):
        for test, value in sorted(iterations[ref].items()):
            if value is None:
                continue
            rows.append({"run": label, **_row(ref, test, metric, "run", {"n": 1, "mean": value, "ci_low": None,
                                                                         "ci_high": None})})
            base = iterations.get("0", {}).get(test)
            if ref != "0" and base is not None:
                rows.append({"run": label, **_row(ref, test, f"{metric} gain", "run",
                                                  {"n": 1, "mean": value - base, "ci_low": None, "ci_high": None})})
    return rows


def _row(ref: str, test: str, metric: str, method: str, s: dict) -> dict:
    r = lambda x: None if x is None else round(x, 6)  # noqa: E731
    return {"iteration": ref, "test": test, "metric": metric, "n": s["n"], "mean": r(s["mean"]),
            "std": r(s.get("std")), "min": r(s.get("min")), "max": r(s.get("max")), "ci_low": r(s["ci_low"]),
            "ci_high": r(s["ci_high"]), "method": method}


def report(root: Path, revs: list[Optional[str]], resamples: int = 2000, seed: int = 0,
           bootstrap: Optional[bool] = None, metric: str = "pass@1", each: bool = False) -> list[dict]:
    """The report's rows over the runs `revs` (None: the working tree; a Path: another workspace). Over seeds when there are two or more
    runs; a bootstrap over test problems when there is one (or `bootstrap` is True: then per run, labelled);
    `each`: also every run's own figures (`run_rows`), after the aggregate."""
    if not revs:
        raise RestemError("no runs to report: run `restem seeds run --seeds ...` first, or name runs with --rev "
                          "(or --workspace)")
    labels = [str(rev) if rev is not None else "workspace" for rev in revs]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise RestemError(f"runs given twice: {twice}; each run counts once")
    boot = len(revs) == 1 if bootstrap is None else bootstrap
    if not boot and len(revs) == 1:
        raise RestemError(f"one run ({revs[0] or 'the working tree'}) and --no-bootstrap: nothing to report; give "
                          "two or more runs (--rev), or let it bootstrap over the test problems")
    if boot and metric != "pass@1":
        raise RestemError(f"--metric {metric}: the bootstrap over test problems is of greedy pass@1; give two or "
                          "more runs, or --no-bootstrap")
    runs, rows = {}, []
    for rev, label in zip(revs, labels):
        with _run_folder(root, rev, boot) as folder:
            runs[label] = read_iterations(folder, metric)
            if boot:
                from restem.schemas.refs import ref_order

                for row in bootstrap_rows(folder, sorted(runs[label], key=ref_order), resamples, seed):
                    rows.append({"run": label, **row})
    if len(revs) > 1:
        rows = [{"run": f"{len(revs)} runs", **row} for row in seed_rows(runs, metric)] + rows
    if each:
        rows += [row for label in labels for row in run_rows(label, runs[label], metric)]
    return rows


def report_seeds_command(
    revs: list[str] = typer.Option([], "--rev", help="a run to include: git revision or DVC experiment name "
                                   "(repeatable); default (no --rev, no --workspace): the experiments "
                                   "named <prefix>-<seed>"),
    workspace: bool = typer.Option(False, "--workspace", help="include the working tree's outputs as a run"),
    dirs: list[Path] = typer.Option([], "--dir", help="include another workspace's outputs as a run: its root "
                                    "folder, e.g. a clone that ran one seed (repeatable)"),
    prefix: str = typer.Option("seed", "--prefix", help="experiments <prefix>-<n> are the default runs"),
    bootstrap: Optional[bool] = typer.Option(None, "--bootstrap/--no-bootstrap", help="bootstrap over test "
                                             "problems per run (default: only when there is one run)"),
    resamples: int = typer.Option(2000, "--resamples", help="bootstrap resamples"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap's resampling"),
    metric: str = typer.Option("pass@1", "--metric", help="over seeds: any number of the iteration metrics, "
                               "e.g. pass@8, maj@8, pass@1_sampled"),
    each: bool = typer.Option(False, "--each", help="also each run's own figure and gain per model and test "
                              "set (method `run`): the rows of a per-seed table"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
) -> None:
    """pass@1 per iteration and test set over seeds (mean, std, min, max, 95 % t interval) and its gain over the
    base, paired per seed; with one run, a 95 % percentile bootstrap over the test problems."""
    import pyarrow as pa

    from restem.cli.errors import user_errors
    from restem.query.output import check_format, render

    with user_errors():
        check_format(fmt)
        if resamples < 100:
            raise RestemError(f"--resamples {resamples}: use at least 100 (2000 is the default)")
        runs: list = list(revs)
        if not runs and not workspace and not dirs:  # default: the finished <prefix>-<n> experiments of this commit
            pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)$")
            found = existing_experiments(Path("."))
            done = [n for n, e in found.items() if pattern.match(n) and e["state"] in (None, "success")]
            runs = sorted(done, key=lambda n: int(pattern.match(n).group(1)))
        if workspace:
            runs.append(None)
        runs += [d.resolve() for d in dirs]
        rows = report(Path("."), runs, resamples, seed, bootstrap, metric, each)
    render(pa.Table.from_pylist(rows), fmt)


seeds_app = typer.Typer(help="The pipeline over several seeds (DVC experiments) and intervals over them.",
                        no_args_is_help=True)
seeds_app.command("run")(run_seeds_command)
seeds_app.command("report")(report_seeds_command)
