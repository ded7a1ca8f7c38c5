"""Stage `voters_improve`: the co-improving chains of the label-free `agreement` filter (filter.voters.improve).

After iteration i's Improve, every voter is fine-tuned as the policy was: on the rows the policy trained on,
`data/iter<i>/train.parquet` (its agreement-filtered samples, with what earlier iterations kept when the
iteration accumulates), with params `improve` (replay of the demonstrations included), from the voter's own
model at the iteration's `init` (`models/voters/iter<init>/<name>`; 0 is the voter as stage `voters` built it).
Its shuffle (and a fresh LoRA adapter) is seeded with its name as well, so the chains keep their own seeds. The
result is `models/voters/iter<i>/<name>`; stage `votes` of the next iteration asks these models. The rows are
trained on as text, tokenised by the voter's own tokenizer (a voter checkpoint need not share the policy's).

Each finished voter waits in `data/.voters-partial/` (named by a hash of what it is trained from) until all are
done, so a rerun after a crash or kill trains only the rest. Without `filter.voters.improve` (or with another
filter mode) the stage writes only a marker saying it is unused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from restem.schemas.errors import RestemError
from restem.schemas.hashing import content_hash, file_hash
from restem.schemas.io import atomic_dir, read_rows
from restem.schemas.params import Params
from restem.schemas.tables import Kept
from restem.workspace import META_FILE, iter_dir, log, partial_dir, problems_dir, voters_model_dir, write_unused
from restem.sampling.engines import set_threads


def unused_reason(params: Params) -> str | None:
    """Why the co-improving stages have nothing to do (None: they do)."""
    f = params.filter
    if f.co_improving:
        return None
    return f"filter.mode is `{f.mode}`" if f.mode != "agreement" else "filter.voters.improve is false"


def voter_folders(params: Params, iteration: int | str, root: Path) -> dict[str, Path]:
    """name -> the voter's model after iteration `iteration` (0: as stage voters built it), each checked to exist."""
    from restem.stages.voters import voter_names

    folder = voters_model_dir(root, iteration)
    out = {name: folder / name for name in voter_names(params)}
    missing = [name for name, path in out.items() if not (path / META_FILE).is_file()]  # trained, linked or adapter
    if missing:
        stage = "voters" if str(iteration) == "0" else f"voters_improve@{iteration}"
        raise RestemError(f"{folder}: no voter model {', '.join(missing)} (filter.voters lists "
                          f"{', '.join(out)}); run `{stage}` first (`dvc repro` does)")
    return out


def run(params: Params, iteration: int | str, init: int | str, root: Path = Path(".")) -> dict:
    out = voters_model_dir(root, iteration)
    why = unused_reason(params)
    if why is not None:
        write_unused(why, None, {out: {}})
        log(f"voters_improve@{iteration}: not used ({why})")
        return {"used": False}
    from restem.stages.improve import fine_tune
    from restem.training.modeling import model_hash

    set_threads(params.runtime.threads)
    source = iter_dir(iteration, root) / "train.parquet"
    rows = read_rows(source, Kept)
    starts = voter_folders(params, init, root)
    demos = file_hash(problems_dir(root) / "demos.parquet") if params.improve.replay else None  # what replay reads
    done: dict[str, Path] = {}
    for name, start in starts.items():
        key = content_hash("voter-improve", model_hash(start), file_hash(source), demos, iteration, init,
                           params.improve.model_dump(mode="json"), params.prompt.model_dump(mode="json"),
                           params.runtime.precision)
        folder = partial_dir(root) / f"iter{iteration}-{name}-{key}"
        if (folder / META_FILE).is_file():
            log(f"voters_improve@{iteration}: {name} was trained by an earlier run, reusing {folder}")
        else:
            with atomic_dir(folder) as tmp:
                fine_tune(params, rows, start, tmp, iteration, init, root, label=f"voters_improve@{iteration}: {name}",
                          salt=("voter", name), sampled_ids=False)
        done[name] = folder
    with atomic_dir(out) as tmp:
        for name, folder in done.items():
            shutil.copytree(folder, tmp / name)
    for folder in done.values():
        shutil.rmtree(folder, ignore_errors=True)
    if partial_dir(root).is_dir() and not any(partial_dir(root).iterdir()):
        partial_dir(root).rmdir()
    log(f"voters_improve@{iteration}: {len(done)} voters trained on the {len(rows)} rows of {source} -> {out}")
    return {"used": True, "voters": len(done), "rows": len(rows)}


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("voters_improve")
