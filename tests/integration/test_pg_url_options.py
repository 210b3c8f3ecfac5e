"""libpq options in the database URL (`?sslmode=verify-full&sslrootcert=...`)
reach the event store's connections, not only the views': a URL that asks
for TLS must never give a plaintext event store. (Before 0.2.0 the
`eventsourcing` pool ignored them: `sslmode=require` against a server without
TLS connected in plaintext.)"""

from __future__ import annotations

import uuid

import psycopg

from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger


def test_the_event_store_connects_with_the_url_options(pg_url: str) -> None:
    name = f"snapledger-probe-{uuid.uuid4().hex[:8]}"
    url = parse_store_url(f"{pg_url}&application_name={name}")
    ledger = Ledger(env=ledger_env(url))
    try:
        ledger.deployments.record("prod", {}, [], actor="op")
        with psycopg.connect(url.conninfo()) as conn:  # itself a connection with that name: subtract it
            rows = conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s",
                                (name,)).fetchone()
        assert rows is not None and rows[0] - 1 >= 1, "no event-store connection carries the URL's options"
    finally:
        ledger.close()
