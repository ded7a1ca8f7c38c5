"""`restem`: the command line for people at a terminal.

Each stage is also a command (`restem grow --iteration 1 --prev 0`), though `dvc repro` is the usual
way to run them. `restem next` appends an iteration to params.yaml and runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from restem.cli.errors import fail, user_errors
from restem.cli.stages import PARAMS, STAGE_COMMANDS
from restem.schemas.errors import RestemError

app = typer.Typer(help="restem: a self-training dataset factory (ReST / ReST-EM as DVC stages).",
                  no_args_is_help=True, add_completion=False)


for _name, _command in STAGE_COMMANDS:
    app.command(name=_name)(_command)


def _load(path: Path):
    from restem.schemas.params import load_params

    return load_params(path)


def _last_model(path: Path) -> int | str:
    """The newest model of the loop (the last step of the last iteration, if it has steps)."""
    last = _load(path).loop.models()[-1]
    return int(last) if last.isdigit() else last


def append_iteration(path: Path, warm: bool) -> int:
    """Append the next iteration to `loop.iterations` in params.yaml, keeping comments; returns its number."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    yaml = YAML()
    yaml.preserve_quotes = True
    # keep `null` written as `null` (ruamel's default writes an empty value)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = yaml.load(path.read_text())
    try:
        iterations = data["loop"]["iterations"]
    except (KeyError, TypeError):
        raise RestemError(f"{path}: no loop.iterations mapping to append to") from None
    last = max((int(k) for k in iterations), default=0)
    prev = _last_model(path)
    entry = CommentedMap(prev=prev, init=prev if warm else 0)
    entry.fa.set_flow_style()
    from ruamel.yaml.scalarstring import SingleQuotedScalarString

    iterations[SingleQuotedScalarString(str(last + 1))] = entry
    _params_check = path.with_name(f".{path.name}.check")
    with open(_params_check, "w") as f:
        yaml.dump(data, f)
    try:
        _load(_params_check)  # never leave an invalid params file behind
        _params_check.replace(path)
    finally:
        _params_check.unlink(missing_ok=True)
    return last + 1


@app.command()
def preset(
    name: str = typer.Argument("", help="preset name (see --list)"),
    output: Path = typer.Option(Path("params.yaml"), "--output", "-o", help="params file to write"),
    list_: bool = typer.Option(False, "--list", help="list the presets and what each follows"),
) -> None:
    """Write a named params preset (rest-em, rest, rft, raft, ...) to params.yaml: the default params with the
    preset's overlay (presets/NAME.yaml) merged in; then `dvc repro` or `dvc exp run` runs it."""
    from restem.schemas.io import write_text
    from restem.schemas.presets import description, load_preset, preset_names, render

    with user_errors():
        if list_ or not name:
            for known in preset_names():
                typer.echo(f"{known:24s} {description(known)}")
            return
        load_preset(name)  # a preset that does not validate is never written
        write_text(output, render(name))
    typer.echo(f"wrote preset {name} to {output}; run `dvc repro` (or `dvc exp run -n {name}`)")


@app.command(name="next")
def next_(
    warm: bool = typer.Option(False, "--warm", help="start Improve from the previous model, not the base"),
    exp: bool = typer.Option(False, "--exp", help="run as a DVC experiment (dvc exp run) instead of dvc repro"),
    run: bool = typer.Option(True, "--run/--no-run", help="run the pipeline after appending"),
    params: Path = PARAMS,
) -> None:
    """Append the next iteration to params.yaml and run it (only the new stages run)."""
    with user_errors():
        if exp:
            # An experiment must not edit the workspace's params: pass the new entry with -S.
            loop = _load(params).loop.iterations
            last = max((int(k) for k in loop), default=0)
            prev = _last_model(params)
            init = prev if warm else 0
            cmd = ["dvc", "exp", "run", "-S", f"+loop.iterations.{last + 1}={{prev: {prev}, init: {init}}}"]
            typer.echo(f"iteration {last + 1}: {' '.join(cmd)}")
        else:
            number = append_iteration(params, warm)
            typer.echo(f"appended iteration {number} to {params}")
            cmd = ["dvc", "repro"]
    if run:
        raise typer.Exit(subprocess.call(cmd))


@app.command()
def metrics(params: Path = PARAMS) -> None:
    """Print the headline metrics of every iteration as a table."""
    import json

    from rich.console import Console
    from rich.table import Table

    folder = Path("metrics/iterations")
    from restem.schemas.params import ref_order

    files = sorted(folder.glob("iter*.json"), key=lambda p: ref_order(p.stem[4:])) if folder.exists() else []
    if not files:
        fail(RestemError("metrics/iterations: no metrics yet; run `dvc repro`"))
    table = Table("iteration", "test set", "pass@1", "pass@k", "maj@k", "wrong steps", "truncated",
                  "grow truncated")
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for path in files:
        m = json.loads(path.read_text())
        grow = fmt((m.get("grow_truncated") or {}).get("share"))  # of the iteration's Grow samples
        for subset, v in sorted(m["test"].items()):
            k = next(key for key in v if key.startswith("maj@"))[4:]
            table.add_row(str(m["iteration"]), subset, fmt(v["pass@1"]), fmt(v[f"pass@{k}"]), fmt(v[f"maj@{k}"]),
                          fmt(v["wrong_steps_rate"]), fmt(v.get("truncated")), grow)
    Console().print(table)


def _mount_tools() -> None:
    """`restem verify` and `restem import problems|samples`: tools that work outside the pipeline."""
    from restem.publish.importers import import_problems_command, import_samples_command
    from restem.cli.verify import verify_command

    app.command("verify")(verify_command)
    tools = typer.Typer(help="Import problems or external completions into restem's tables.", no_args_is_help=True)
    tools.command("problems")(import_problems_command)
    tools.command("samples")(import_samples_command)
    app.add_typer(tools, name="import")

    from restem.query.audits import audit_command
    from restem.query.sql import sql_command

    app.command("sql")(sql_command)
    app.command("audit")(audit_command)

    from restem.query.plot_page import draw_command

    app.command("draw")(draw_command)

    from restem.publish.export import export_command

    app.command("export")(export_command)

    from restem.query.seeds import seeds_app

    app.add_typer(seeds_app, name="seeds")


_mount_tools()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":
    sys.exit(app())
