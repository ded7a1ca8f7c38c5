"""The workspace layout, in one place: where every stage's outputs and the user's inputs live (one name per
concept: stage `grow` writes `data/iter<i>/samples.parquet`, and so on). The stages, the SQL views, `--rev`,
the audits and the export all ask here; plus the progress log every stage writes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from restem.schemas.errors import RestemError

DATA = Path("data")
MODELS = Path("models")
METRICS = Path("metrics")
INPUTS = Path("inputs")  # the user's own files: inputs/<stage>/ is a dep of that stage in dvc.yaml
PROBLEMS = DATA / "problems"
EVAL = DATA / "eval"  # Evaluate's samples and scores: data/eval/iter<ref>/
ITERATION_METRICS = METRICS / "iterations"  # metrics/iterations/iter<ref>.json
META_FILE = "restem.json"  # a model folder's lineage
DECONTAM_FILE = "decontam.json"  # data/problems/decontam.json: the problems stage's contamination check, if run
TABLES = ("samples", "scores", "kept", "rejected")  # an iteration's tables: data/iter<ref>/<table>.parquet
# stage rationalize's tables beside them: hinted samples of unsolved problems and their verdicts
RATIONALES, RATIONALE_SCORES = "rationales.parquet", "rationale_scores.parquet"
# stage votes's tables beside them: the co-improving voters' greedy answers to the iteration's Grow problems
VOTES, VOTE_SCORES = "votes.parquet", "vote_scores.parquet"


def problems_dir(root: Path = Path(".")) -> Path:
    return root / PROBLEMS


def iter_dir(iteration: int | str, root: Path = Path(".")) -> Path:
    """`data/iter<i>`: an iteration's tables, or a step's ('1b') kept set."""
    return root / DATA / f"iter{iteration}"


def model_dir(iteration: int | str, root: Path = Path(".")) -> Path:
    """`models/iter<i>`: 0 is the base, '1b' the model of step 1b."""
    return root / MODELS / f"iter{iteration}"


def reward_dir(root: Path = Path(".")) -> Path:
    """`models/reward`: the learned reward model (or its record of the user's checkpoint)."""
    return root / MODELS / "reward"


def reward_data_dir(root: Path = Path(".")) -> Path:
    """`data/reward`: the samples and verdicts the reward model was trained and measured on."""
    return root / DATA / "reward"


def write_unused(why: str, metrics: Path | None, folders: dict[Path, dict[str, type]]) -> None:
    """The outputs of a stage that the params leave unused: each folder holds `unused.json` saying `why` (and the
    empty tables named, file -> row schema, for readers that expect them), and the `metrics` file (if the stage
    has one) says so."""
    from restem.schemas.io import atomic_dir, write_json, write_rows

    for folder, tables in folders.items():
        with atomic_dir(folder) as tmp:
            for name, schema in tables.items():
                write_rows(tmp / name, schema, [])
            write_json(tmp / "unused.json", {"unused": True, "why": why})
    if metrics is not None:
        write_json(metrics, {"used": False})


def user_input(value: str, stage: str, field: str, root: Path = Path(".")) -> Path:
    """The user's file or checkpoint that params `field` names, relative paths taken from `root`.

    It must lie in `inputs/<stage>/`, the folder dvc.yaml lists as a dep of `stage`, so that DVC tracks it by
    content: with a path elsewhere, replacing the file would leave the stage "up to date" with stale outputs.
    """
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    folder = root / INPUTS / stage
    if not path.resolve().is_relative_to(folder.resolve()):
        raise RestemError(
            f"params: {field} is {value!r}, outside {INPUTS / stage}/ (the folder DVC tracks by content for stage "
            f"{stage}); move or copy it there (a big checkpoint: `cp -al SRC {INPUTS / stage}/` makes hard links, no "
            f"copy; a symbolic link does not work) and set {field} to {INPUTS / stage}/<name>")
    return path


def model_ref(text: str) -> int | str:
    """A model of the loop on the command line: an iteration number or a step key such as '1b'
    (schemas/refs.py parses it), in the int-or-str form the stages take."""
    from restem.schemas.refs import Ref

    return Ref.parse(text).legacy()  # ValueError names what is wrong


def log(message: str) -> None:
    """Progress lines go to stderr so stdout stays clean for data."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


VOTERS = "voters"


def voters_model_dir(root: Path = Path("."), iteration: int | str = 0) -> Path:
    """`models/voters/iter<i>/<name>`: the agreement filter's voters as stage `voters` built them (0) or as
    co-improved after iteration i (filter.voters.improve, stage voters_improve)."""
    return root / MODELS / VOTERS / f"iter{iteration}"


def voters_data_dir(root: Path = Path(".")) -> Path:
    return root / DATA / VOTERS


def partial_dir(root: Path = Path(".")) -> Path:
    """Where trained voters wait until every voter is done (DVC empties the stage's outputs on a rerun, not this)."""
    return root / DATA / ".voters-partial"
