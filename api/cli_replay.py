"""CLI: `snapledger replay --verify` and `snapledger replay --rebuild NAME`.

Runs beside the service against its database (same configuration flags as
`serve`); the service keeps running."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from .cli_output import fail
from .cli_server import load_server_config, server_options

if TYPE_CHECKING:
    from snapledger.adapters.bootstrap import Runtime


@click.command()
@server_options
@click.option("--verify", is_flag=True, help="Rebuild every view from position 0 and compare with the live ones.")
@click.option("--rebuild", "rebuild_name", metavar="NAME", help="Rebuild one view and swap it in (no downtime).")
def replay(verify: bool, rebuild_name: str | None, **options: Any) -> None:
    """Rebuild views from the event log alone: verify them or replace one."""
    from snapledger.adapters.bootstrap import bootstrap, open_scratch
    from snapledger.projections import replay as replaying
    from snapledger.projections.views import all_views

    if verify == bool(rebuild_name):
        fail("give --verify or --rebuild NAME", 2)
    names = [v.name for v in all_views()]
    if rebuild_name and rebuild_name not in names:
        fail(f"no view named {rebuild_name!r} (views: {', '.join(names)})", 2)
    config = load_server_config(**options)
    checked = _existing_store(config.database_url)
    click.echo(f"store: {checked}", err=True)
    runtime = bootstrap(config, frozenset())
    scratch = open_scratch(runtime.url, replaying.scratch_name())

    def progress(position: int, head: int) -> None:
        click.echo(f"\r  replayed to position {position}/{head}", nl=False, err=True)

    try:
        positions_before = runtime.projector.positions()
        views = [rebuild_name] if rebuild_name else None
        rebuilt = replaying.rebuild(runtime.ledger.store, scratch.db, views, progress)
        click.echo(f"\n  {rebuilt.events} events replayed into {len(rebuilt.views)} view(s)", err=True)
        if rebuild_name:
            if scratch.file is not None:
                runtime.db.query(f"ATTACH DATABASE '{scratch.file}' AS {scratch.ref}")
            replaying.swap(runtime.db, rebuilt, rebuild_name, scratch.ref)
            click.echo(f"view {rebuild_name} of {checked} rebuilt from the log and swapped in at position "
                       f"{rebuilt.position}")
            return
        _positions_at(runtime, rebuilt.position, positions_before)  # let the live views reach the rebuild
        diffs = replaying.differences(runtime.db, rebuilt, runtime.ledger.store)
        if diffs:
            for line in diffs:
                click.echo(f"DIFFERS {line}")
            sys.exit(1)
        click.echo(f"all {len(rebuilt.views)} views equal a rebuild from the log ({rebuilt.events} events) "
                   f"in {checked}")
    finally:
        scratch.close()
        runtime.close()


def _existing_store(database_url: str) -> str:
    """The store's label, or exit 1 naming it: a rebuild of a store that does not exist
    would create an empty one and find all (no) views equal."""
    import psycopg

    from snapledger.adapters.store import parse_store_url, store_exists

    url = parse_store_url(database_url)
    try:
        exists = store_exists(url)
    except psycopg.Error as error:
        fail(f"cannot open the store {url.label}: {(str(error).strip().splitlines() or ['unreachable'])[0]}")
    label = url.label if url.sqlite_path is None else f"sqlite:///{str(url.sqlite_path.resolve()).lstrip('/')}"
    if not exists:
        fail(f"no event store at {label}: nothing to replay (give the service's --data-dir, --database "
             "or --config)")
    return label


def _positions_at(runtime: Runtime, target: int, before: dict[str, int]) -> dict[str, int]:
    """The live positions once the projector reached the rebuild's position (a few seconds at most)."""
    import time

    deadline = time.monotonic() + 30
    positions: dict[str, int] = runtime.projector.positions()
    while any(p < target for p in positions.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        positions = runtime.projector.positions()
    return positions


COMMANDS: tuple[click.Command, ...] = (replay,)
