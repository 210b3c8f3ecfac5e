"""Verifying views against a rebuild while the log keeps growing: events that
arrive between the rebuild and the comparison are no difference; a tampered
row still is."""

from __future__ import annotations

from pathlib import Path

from uuid import UUID

from snapledger.adapters.store import ensure_schema, ledger_env, open_database, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.operations import OperationRunner
from snapledger.projections import replay
from snapledger.projections.projector import Projector
from support.fakes import FakeCpi


def _scratch_url(store_url: str, tmp_path: Path) -> str:
    if store_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'scratch.sqlite'}"
    return f"{store_url.partition('?')[0]}?schema={replay.scratch_name()}"


def _project(ledger: Ledger, projector: Projector) -> None:
    position = projector.position()
    notifications = ledger.store.recorder.select_notifications(start=position, limit=100_000, inclusive_of_start=False)
    projector.apply([(n.id, ledger.store.mapper.to_domain_event(n)) for n in notifications])


def _snapshot_round(ledger: Ledger, runner: OperationRunner) -> None:
    task = ledger.snapshots.take("prod", actor="op")
    for operation in task.operations:
        runner.execute(UUID(operation))


def test_verify_while_events_arrive(store_url: str, tmp_path: Path) -> None:
    url = parse_store_url(store_url)
    ledger = Ledger(env=ledger_env(url), default_cpi="local")
    live_db = open_database(url)
    scratch_url = parse_store_url(_scratch_url(store_url, tmp_path))
    if scratch_url.kind == "postgres":
        ensure_schema(scratch_url)
    scratch_db = open_database(scratch_url)
    try:
        projector = Projector(live_db)
        projector.setup()
        runner = OperationRunner(ledger, {"local": FakeCpi({"d0", "d1"})}, worker="test")
        ledger.settings.set_snapshots_enabled(True, actor="op")
        ledger.deployments.record("prod", {}, [{"job": "db", "index": 0, "disks": ["d0", "d1"]}], actor="op")
        _snapshot_round(ledger, runner)
        _project(ledger, projector)

        rebuilt = replay.rebuild(ledger.store, scratch_db)
        assert rebuilt.position == ledger.store.recorder.max_notification_id()
        # The service goes on: more events, projected live, after the rebuild read the log.
        _snapshot_round(ledger, runner)
        _project(ledger, projector)
        assert projector.position() > rebuilt.position

        assert replay.differences(live_db, rebuilt, ledger.store) == []
        assert rebuilt.position == projector.position()  # caught up to what the live views had

        with live_db.transaction() as cur:
            cur.execute("UPDATE snapshots_view SET trigger = 'forged' WHERE snapshot_id = "
                        "(SELECT MIN(snapshot_id) FROM snapshots_view)")
        found = replay.differences(live_db, rebuilt, ledger.store)
        assert len(found) == 1 and found[0].startswith("snapshots.snapshots_view: 1 rows only in the live view")
    finally:
        scratch_db.close()
        live_db.close()
        ledger.close()
