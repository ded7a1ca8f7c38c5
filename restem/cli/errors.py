"""The one place a user error (`RestemError`: a bad file, row, field or params key, with its fix) becomes a message
on stderr and exit status 2, for every `restem` command and every `python -m restem.stages.<name>` that DVC runs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NoReturn

import typer

from restem.schemas.errors import RestemError


def fail(exc: RestemError) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Inside it, a RestemError ends the command with its message and exit status 2 (no traceback)."""
    try:
        yield
    except RestemError as exc:
        fail(exc)
