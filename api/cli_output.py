"""What the CLI prints and how it ends: tables, JSON, errors, exit codes, confirmations."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from .client import ApiError

# Exit codes (README "Exit codes"): a script tells "the task failed" from "we lost sight of it".
EXIT_FAILED = 1  # the request was refused, or the task ended in `error`
EXIT_USAGE = 2  # bad arguments or input; nothing was sent
EXIT_LOST = 3  # the service stayed unreachable while following: the task goes on, re-attach with `task ID`
EXIT_INTERRUPTED = 130  # Ctrl-C while following: the task goes on, re-attach with `task ID`

SCOPED_HINT = "a deployment's admin gives -d DEPLOYMENT"


def table(headers: list[str], rows: list[list[Any]], footer: str) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=False)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells), "", footer])


def emit(ctx: click.Context, data: Any, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2) if ctx.obj["json"] else human(data))


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def call(fn: Callable[[], Any], forbidden_hint: str | None = None) -> Any:
    try:
        return fn()
    except ApiError as error:
        fail(f"{error.message} ({forbidden_hint})" if forbidden_hint and error.code == "forbidden"
             else error.message)


def confirm(ctx: click.Context, question: str, what_goes: list[str] | None = None) -> None:
    """Ask before a destructive act (skipped with -n); show what goes away first."""
    if ctx.obj["non_interactive"]:
        return
    for line in what_goes or []:
        click.echo(line)
    try:
        agreed = click.confirm(question, default=False)
    except click.Abort:  # no answer (stdin closed): nothing was done
        click.echo("", err=True)
        fail("not confirmed, nothing done (pass -n to skip the question in scripts)", EXIT_FAILED)
    if not agreed:
        fail("not confirmed, nothing done", EXIT_FAILED)
