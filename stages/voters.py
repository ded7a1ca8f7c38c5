"""Stage `voters`: the other models of the label-free `agreement` filter, `models/voters/iter0/<name>`, and
their greedy answer to every Grow-pool problem, `data/voters/{samples,scores}.parquet`, with how often
the verifier agrees with each, `metrics/voters.json`.

Voters come from params `filter.voters`: `seeds` trains one tiny model per seed with the `base`
recipe (another initialisation and shuffle of the same demonstrations: `seed<N>`), and
`checkpoints` links local Hugging Face folders (`ckpt<i>`, recorded by path and content hash, as
`base.checkpoint` is). Each voter greedy-decodes every problem of `data/problems/train.parquet` once
with Grow's engine and `grow.max_new_tokens`; the verifier extracts the answers. The filter then keeps
a policy sample only when its answer is the one at least `min_agree` voters gave. The verifier's
verdicts on the voters' answers are stored and reported, never used to decide.

Each trained voter waits in `data/.voters-partial/` (named by a hash of its recipe and the
demonstrations) until all are built, so a rerun after a crash or kill trains only the missing ones.
With another filter mode the stage only writes markers saying it is unused (and empty tables).
With `filter.voters.improve` the voters then improve beside the policy, each iteration (stages/voters_improve.py,
stages/votes.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash
from restem.schemas.io import atomic_dir, read_rows, write_json, write_rows
from restem.schemas.params import Params
from restem.schemas.tables import Problem, Sample, Score
from restem.workspace import (METRICS, log, partial_dir, problems_dir, user_input, voters_data_dir,
                              voters_model_dir, write_unused)
from restem.sampling.engines import SamplingParams, set_threads

PURPOSE = "vote"


def voter_names(params: Params) -> list[str]:
    v = params.filter.voters
    return [f"seed{s}" for s in v.seeds] + [f"ckpt{i + 1}" for i in range(len(v.checkpoints))]


def _write_tables(root: Path, samples: list, scores: list) -> None:
    with atomic_dir(voters_data_dir(root)) as tmp:
        write_rows(tmp / "samples.parquet", Sample, samples)
        write_rows(tmp / "scores.parquet", Score, scores)


def _trained_voter(params: Params, root: Path, name: str, seed: int) -> Path:
    """A tiny voter trained with `seed`, reused from a crashed or killed earlier run when its recipe and
    demonstrations are the same (the folder name holds their hash)."""
    from restem.schemas.hashing import file_hash
    from restem.training.tiny import tiny_recipe, train_tiny

    key = content_hash("voter", tiny_recipe(params, seed).model_dump(mode="json"), params.runtime.precision,
                       file_hash(problems_dir(root) / "demos.parquet"))
    folder = partial_dir(root) / f"{name}-{key}"
    if (folder / "config.json").is_file():
        log(f"voters: {name} was trained by an earlier run, reusing {folder}")
    else:
        train_tiny(params, root, folder, seed, iteration=f"voter-{name}", label=f"voters: {name}")
    return folder


def build_voters(params: Params, root: Path) -> dict[str, Path]:
    """Train or link every voter into models/voters/iter0/<name> (atomically, all or none); name -> folder.
    Each trained voter is kept aside as soon as it is done, so a rerun after a crash trains only the rest."""
    from restem.training.modeling import link_checkpoint

    names = voter_names(params)
    v = params.filter.voters
    checkpoints = [user_input(c, "voters", "filter.voters.checkpoints", root) for c in v.checkpoints]  # before training
    trained = {name: _trained_voter(params, root, name, seed) for name, seed in zip(names, v.seeds)}
    with atomic_dir(voters_model_dir(root)) as tmp:
        for name, folder in trained.items():
            shutil.copytree(folder, tmp / name)
        for name, checkpoint in zip(names[len(v.seeds):], checkpoints):
            try:
                meta = link_checkpoint(checkpoint, tmp / name, "filter.voters.checkpoints")
            except RestemError as exc:
                raise RestemError(f"filter.voters.checkpoints: {exc}") from None
            log(f"voters: {name} is {meta.checkpoint} ({meta.model_hash})")
        from restem.training.modeling import model_hash

        seen: dict[str, str] = {}
        for name in names:
            h = model_hash(tmp / name)
            if h in seen:
                raise RestemError(f"filter.voters: {seen[h]} and {name} are the same model ({h}); a voter that "
                                  "repeats another adds no independent vote: remove one")
            seen[h] = name
    shutil.rmtree(partial_dir(root), ignore_errors=True)
    return {name: voters_model_dir(root) / name for name in names}


def answer(params: Params, folders: dict[str, Path], problems: list[dict], root: Path = Path("."),
           iteration: int = 0, label: str = "voters") -> tuple[list[Sample], list[Score]]:
    """Each voter's greedy completion of every problem, and the verifier's reading of it (rows of `iteration`:
    0 for the voters as built, i for the co-improving voters' answers to iteration i's problems)."""
    from restem.sampling import sampler
    from restem.verifiers import batch
    from restem.training.modeling import model_hash

    samples: list[Sample] = []
    for name, folder in folders.items():
        engine = sampler.make_engine(params.grow.engine, folder, params.runtime.batch_size, params.runtime)
        greedy = SamplingParams(0.0, params.grow.max_new_tokens, stop=tuple(params.grow.stop))
        samples += sampler.sample(engine, problems, 1, greedy, params.grow.seed, iteration, PURPOSE,
                                  model_hash(folder), label=f"{label}: {name} answers", prompt=params.prompt,
                                  root=root)
        del engine
    rows = [s.model_dump() for s in samples]
    views = {p["problem_id"]: batch.problem_view(p) for p in problems}
    scores = batch.score_samples(params.score.verifier, rows, views, params.runtime.workers, params.score.timeout_s,
                                 extraction=params.score.extraction)
    return samples, scores


def run(params: Params, root: Path = Path(".")) -> dict:
    if params.filter.mode != "agreement":
        write_unused(f"filter.mode is `{params.filter.mode}`", root / METRICS / "voters.json", {
            voters_model_dir(root): {}, voters_data_dir(root): {"samples.parquet": Sample, "scores.parquet": Score}})
        log(f"voters: not used (filter.mode is `{params.filter.mode}`)")
        return {"used": False}
    if params.filter.require_consistent:  # the filter will ask for it: say so before training any voter
        from restem.verifiers.base import consistency_check

        consistency_check(params.score.verifier, "filter.require_consistent")
    set_threads(params.runtime.threads)
    problems = read_rows(problems_dir(root) / "train.parquet", Problem)
    folders = build_voters(params, root)
    samples, scores = answer(params, folders, problems, root)
    _write_tables(root, samples, scores)
    summary = {"used": True, "problems": len(problems), "min_agree": params.filter.voters.needed,
               "voters": voter_report(folders, samples, scores)}
    write_json(root / METRICS / "voters.json", summary)
    log("voters: " + ", ".join(f"{n} verifier-correct {v['verifier_accuracy']}" for n, v in summary["voters"].items()))
    return summary


def voter_report(folders: dict[str, Path], samples: list[Sample], scores: list[Score]) -> dict:
    """Per voter: its model hash, how many answers the verifier could read, and the share it calls correct
    (reported so that the filter stays honest; the filter never reads it)."""
    from restem.training.modeling import model_hash

    by_policy: dict[str, list[Score]] = {}
    for s, sc in zip(samples, scores):
        by_policy.setdefault(s.policy, []).append(sc)
    out = {}
    for name, folder in folders.items():
        model = model_hash(folder)
        rows = by_policy.get(model, [])
        labelled = [r.correct for r in rows if r.correct is not None]
        out[name] = {"model": model, "answered": sum(1 for r in rows if r.extracted is not None),
                     "verifier_accuracy": round(sum(labelled) / len(labelled), 6) if labelled else None}
    return out


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("voters")
