"""Stage `votes`: the co-improving voters' answers to one iteration's Grow problems (filter.voters.improve).

The voters of iteration i are their models at i's `prev` (`models/voters/iter<prev>/<name>`; stage `voters`
built iteration 0's, stage `voters_improve` the later ones), as the policy that grew i's samples is
`models/iter<prev>`. Each greedy-decodes every problem of `data/iter<i>/samples.parquet` once, as stage
`voters` does, and the verifier reads the answers: `data/iter<i>/votes.parquet` and `vote_scores.parquet`
(Sample rows of purpose `vote`, iteration i). The agreement filter of iteration i counts these votes. How often
the verifier agrees with each voter is `metrics/votes/iter<i>.json`, reported and never used to decide.

Without `filter.voters.improve` both tables are written empty and nothing is loaded (the filter then counts the
answers of stage `voters`, `data/voters`).
"""

from __future__ import annotations

from pathlib import Path

from restem.schemas.io import read_rows, write_json, write_together
from restem.schemas.params import Params
from restem.schemas.tables import Problem, Sample, Score
from restem.workspace import METRICS, VOTE_SCORES, VOTES, iter_dir, log, problems_dir


def run(params: Params, iteration: int | str, prev: int | str, root: Path = Path(".")) -> dict:
    from restem.stages.voters_improve import unused_reason, voter_folders

    out_dir = iter_dir(iteration, root)
    metrics = root / METRICS / "votes" / f"iter{iteration}.json"
    why = unused_reason(params)
    if why is not None:
        write_together(out_dir, {VOTES: (Sample, []), VOTE_SCORES: (Score, [])})
        write_json(metrics, {"used": False})
        log(f"votes@{iteration}: not used ({why}); wrote empty tables")
        return {"used": False}
    from restem.sampling.engines import set_threads
    from restem.stages.voters import answer, voter_report

    set_threads(params.runtime.threads)
    folders = voter_folders(params, prev, root)
    asked = {s["problem_id"] for s in read_rows(out_dir / "samples.parquet", Sample)}
    problems = [p for p in read_rows(problems_dir(root) / "train.parquet", Problem) if p["problem_id"] in asked]
    samples, scores = answer(params, folders, problems, root, iteration=int(iteration),
                             label=f"votes@{iteration}")
    write_together(out_dir, {VOTES: (Sample, samples), VOTE_SCORES: (Score, scores)})
    summary = {"used": True, "iteration": str(iteration), "voters_of": str(prev), "problems": len(problems),
               "min_agree": params.filter.voters.needed, "voters": voter_report(folders, samples, scores)}
    write_json(metrics, summary)
    log(f"votes@{iteration}: " + ", ".join(f"{n} (models/voters/iter{prev}) verifier-correct {v['verifier_accuracy']}"
                                           for n, v in summary["voters"].items()))
    return summary


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("votes")
