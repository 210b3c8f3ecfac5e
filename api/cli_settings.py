"""CLI: the service's identity and settings: `info`, snapshots on/off, the schedules."""

from __future__ import annotations

from typing import Any

import click

from snapledger.domain.settings import SCHEDULE_NAMES

from .cli_output import call, emit


@click.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Show the service's name, version and whether snapshots are enabled."""
    data = call(lambda: ctx.obj["client"].get("/info"))
    emit(ctx, data, lambda d: "\n".join([
        f"Name       {d['name']}", f"UUID       {d['uuid']}", f"Version    {d['version']}",
        f"CPI        {d['cpi']}", f"Snapshots  {'enabled' if d['features']['snapshots']['status'] else 'disabled'}",
    ]))


@click.command("enable-snapshots")
@click.pass_context
def enable_snapshots(ctx: click.Context) -> None:
    """Turn snapshots on (they are off by default)."""
    data = call(lambda: ctx.obj["client"].request("PUT", "/config/snapshots", {"enable_snapshots": True}))
    emit(ctx, data, lambda d: "Snapshots enabled")


@click.command("disable-snapshots")
@click.pass_context
def disable_snapshots(ctx: click.Context) -> None:
    """Turn snapshots off: new snapshot requests are refused."""
    data = call(lambda: ctx.obj["client"].request("PUT", "/config/snapshots", {"enable_snapshots": False}))
    emit(ctx, data, lambda d: "Snapshots disabled")


@click.command()
@click.pass_context
def schedules(ctx: click.Context) -> None:
    """Show each schedule, its next fire times and its last fire."""
    rows = call(lambda: ctx.obj["client"].get("/schedules"))

    def human(rs: list[dict[str, Any]]) -> str:
        lines = []
        for r in rs:
            state = "active" if r["active"] else ("off" if not r["expression"] else "inactive (snapshots disabled)")
            if r.get("managed_by"):
                state += f", managed by {r['managed_by']}"
            lines.append(f"{r['name']}: {r['expression'] or '-'}  [{state}]")
            lines.extend(f"  next   {t}" for t in r["next_fires"])
            last = r["last_fire"]
            lines.append(f"  last   {last['fire_time']} tasks {', '.join(last['tasks']) or '-'}" if last
                         else "  last   never fired")
            if r["last_missed"]:
                lines.append(f"  missed {r['last_missed']['fire_time']} (latest missed fire)")
        return "\n".join(lines)

    emit(ctx, rows, human)


@click.command("set-schedule")
@click.argument("name", type=click.Choice(list(SCHEDULE_NAMES)))
@click.argument("expression")
@click.pass_context
def set_schedule(ctx: click.Context, name: str, expression: str) -> None:
    """Set a schedule in BOSH cron syntax (e.g. '0 0 7 * * * UTC'), or 'off'."""
    data = call(lambda: ctx.obj["client"].request("PUT", "/config/snapshots", {name: expression}))
    emit(ctx, data, lambda d: f"{name}: {d[name] or 'off'}")


COMMANDS: tuple[click.Command, ...] = (info, enable_snapshots, disable_snapshots, schedules, set_schedule)
