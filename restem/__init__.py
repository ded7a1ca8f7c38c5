"""restem: a data-centric self-training dataset factory (ReST / ReST-EM as DVC stages).

Everything installs under this one import name, so restem can share an environment with other libraries
(`verifiers`, for one, is also a popular RL-environments library):

- `restem.stages`, `restem.schemas`, `restem.verifiers`: the project's top-level folders `stages/` (the DVC
  stage entry points), `schemas/` (params and tables) and `verifiers/` (grading);
- the library rooms below this folder: `restem.workspace` (where every output lives), `restem.sampling`
  (engines, shards), `restem.training` (models, the training loop), `restem.query` (SQL views, audits),
  `restem.publish` (import, export) and `restem.cli` (the `restem` command).

In a checkout the three top-level folders are found through this package's search path (below), so
`python -m restem.stages.grow` run from any copy of the repository (DVC's experiment temp folders too)
imports that copy's code; an installed wheel maps them into the package instead (pyproject.toml).
"""

from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "dvc.yaml").is_file() and (_ROOT / "stages").is_dir():
    __path__.append(str(_ROOT))  # restem.stages -> <checkout>/stages, and so on
