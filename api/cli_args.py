"""How the command line is read: global options anywhere, instance slugs.

`bosh` lets an operator put `--json` or `-n` after the command
(`bosh snapshots -d prod --json`), and a script that appends a flag must not
have to know where it goes. click only reads a group's options before the
command name, so `GlobalOptionsGroup` moves them there before parsing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def _options_by_name(params: list[click.Parameter]) -> dict[str, click.Option]:
    return {name: p for p in params if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}


def _takes_value(option: click.Option, token: str) -> bool:
    """Whether the token after `token` is this option's value (`--url X`, not `--url=X` or `--json`)."""
    return not (option.is_flag or option.count or "=" in token)


def _name(token: str) -> str:
    return token.split("=", 1)[0] if token.startswith("--") else token


class GlobalOptionsGroup(click.Group):
    """A group whose options may also follow the command name.

    A command's own option of the same name wins (`hash-secret --secret`), and
    the values of the command's options are never mistaken for global options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.hoist(ctx, list(args)))

    def hoist(self, ctx: click.Context, args: list[str]) -> list[str]:
        own = _options_by_name(self.params)
        at = 0
        while at < len(args) and args[at].startswith("-") and args[at] != "--":
            option = own.get(_name(args[at]))
            at += 2 if option is not None and _takes_value(option, args[at]) else 1
        if at >= len(args) or args[at] == "--":
            return args
        command = self.get_command(ctx, args[at])
        if command is None:
            return args  # click names the unknown command
        theirs = _options_by_name(command.params)
        moved: list[str] = []
        kept: list[str] = []
        rest = iter(args[at + 1:])
        for token in rest:
            if token == "--":
                kept += [token, *rest]
                break
            name = _name(token)
            target, option = (kept, theirs[name]) if name in theirs else (
                (moved, own[name]) if name in own else (kept, None))
            target.append(token)
            if option is not None and _takes_value(option, token):
                value = next(rest, None)
                if value is not None:
                    target.append(value)
        return [*args[:at], *moved, args[at], *kept]


def split_instance(job: str | None, index: str | None) -> tuple[str | None, str | None]:
    """`db/0` or `db/<instance id>` (a slug, as `bosh` names instances) or `db 0`: the job and index-or-id."""
    if job is None or "/" not in job:
        return job, index
    if index is not None:
        fail_usage(f"name the instance once: '{job}' or '{job.partition('/')[0]} {index}', not both")
    name, _, index_or_id = job.partition("/")
    if not name or not index_or_id or "/" in index_or_id:
        fail_usage(f"'{job}' is not an instance: give JOB/INDEX or JOB/ID, e.g. db/0")
    return name, index_or_id


def fail_usage(message: str) -> Any:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(2)


def deployment_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-d", "--deployment", required=True, envvar="SNAPLEDGER_DEPLOYMENT",
                        help="Deployment name (env SNAPLEDGER_DEPLOYMENT).")(fn)


def no_wait_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--no-wait", is_flag=True, help="Print the task id and return at once; "
                        "follow it later with `snapledger task ID`.")(fn)
