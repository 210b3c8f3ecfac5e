"""Which snapshots the listing shows and which a deployment's count counts, by
state: one definition each in the domain (two meanings, two names: in doubt is
listed, because it may exist, but not counted as existing)."""

from __future__ import annotations

from snapledger.adapters.store import ensure_schema, open_database, parse_store_url
from snapledger.domain import snapshot
from snapledger.domain.snapshot import EXISTING_STATES, IN_DOUBT, LISTED_STATES
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries

STATES = sorted(v for k, v in vars(snapshot).items() if k.isupper() and isinstance(v, str))


def test_listed_and_existing_states(store_url: str) -> None:
    url = parse_store_url(store_url)
    if url.kind == "postgres":
        ensure_schema(url)
    db = open_database(url)
    Projector(db).setup()
    with db.transaction() as cur:
        for seq, state in enumerate(STATES, start=1):
            cur.execute(
                "INSERT INTO snapshots_view (snapshot_id, deployment, job, idx, instance_id, disk_cid, snapshot_cid, "
                "state, clean, trigger, task_id, requested_at, listed_seq) "
                "VALUES (%s, 'prod', 'db', 0, 'i-0', 'd-0', %s, %s, %s, 'manual', 't', '2026-01-01T00:00:00Z', %s)",
                (f"s-{state}", f"snap-{state}", state, False, seq))
    queries = Queries(db)
    assert {row["state"] for row in queries.snapshots("prod")} == LISTED_STATES
    assert queries.snapshot_counts() == {"prod": len(EXISTING_STATES)}
    assert {IN_DOUBT} == LISTED_STATES - EXISTING_STATES
