"""Stage `plots`: the data of the DVC plots drawn from the whole workspace, `metrics/plots/{accuracy,filter,
solve_rates,audit_rates}.csv` (accuracy of every test set, kept samples per outcome, per-problem solve rates,
audit rates per iteration), in a form whose columns do not depend on the test sets or iterations.
The offline page and SVG copies of the plots are `restem draw` (restem/query/plot_page.py), not this stage.

Its own stage, not part of `evaluate`, because it reads every table under `data/` (through the query layer,
restem/query/sql.py) and DVC cannot let `evaluate` depend on `data/` while it writes `data/eval`: here the deps
name the whole workspace, so a changed sample, score or kept table reruns it.
"""

from __future__ import annotations

from pathlib import Path

from restem.schemas.params import Params
from restem.workspace import log


def run(params: Params, root: Path = Path(".")) -> list[Path]:
    """Write the plot data under `root/metrics/plots/`; returns the files written (see restem.query.plots)."""
    from restem.query.plots import write_plot_data

    written = write_plot_data(root)
    log(f"plots: {', '.join(p.name for p in written)} -> {root / 'metrics' / 'plots'}")
    return written


if __name__ == "__main__":
    from restem.cli.stages import run_module

    run_module("plots")
