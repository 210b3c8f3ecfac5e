"""The pools the root opens: the lazy pre-ping, and the event store's pool as
the library builds it plus what it has no setting for (adapters/pg_recorder.py
`ledger_pool`)."""

from __future__ import annotations

import psycopg
import pytest

from snapledger.adapters.store import PING_QUIET_S, RECONNECT_TIMEOUT_S, QuietPing, ledger_env, parse_store_url
from snapledger.domain.application import Ledger


def test_a_connection_pinged_lately_is_handed_out_unpinged(pg_url: str) -> None:
    now = [100.0]
    ping = QuietPing(clock=lambda: now[0])
    conn = psycopg.connect(parse_store_url(pg_url).conninfo(), autocommit=True)
    ping(conn)  # pinged: fine
    conn.close()  # a ping now would fail
    now[0] += PING_QUIET_S / 2
    ping(conn)  # within the quiet window: not pinged, no round trip
    now[0] += PING_QUIET_S
    with pytest.raises(psycopg.OperationalError):
        ping(conn)  # the window passed: pinged, and the broken connection is found


def test_the_event_store_pool_gives_up_reconnecting_within_seconds(pg_url: str) -> None:
    ledger = Ledger(env=ledger_env(parse_store_url(pg_url)))
    try:
        pool = ledger.store.recorder.datastore.pool
        assert pool.reconnect_timeout == RECONNECT_TIMEOUT_S  # not psycopg_pool's 5 minutes (decision 13)
        assert isinstance(pool._check, QuietPing)
        ledger.deployments.record("prod", {}, [], actor="op")  # and it works
    finally:
        ledger.close()
