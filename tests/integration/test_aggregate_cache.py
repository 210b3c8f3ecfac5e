"""The ledger's aggregate cache is bounded and never stale.

Every process reads aggregates all day (the worker one per snapshot it takes);
an unbounded cache grew with the log (it did: the library reads a maximum
size of "0" as unbounded). Reads are fast-forwarded, so a change written by
another process (another Ledger on the same store) is seen at once.
"""

from __future__ import annotations

from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import AGGREGATE_CACHE_SIZE, Ledger


def test_cache_stays_bounded_and_reads_are_fresh(store_url: str) -> None:
    url = parse_store_url(store_url)
    api_ledger, other_ledger = Ledger(env=ledger_env(url)), Ledger(env=ledger_env(url))
    try:
        api_ledger.settings.set_snapshots_enabled(True, actor="op")
        names = [f"dep-{n}" for n in range(AGGREGATE_CACHE_SIZE + 50)]
        for name in names:
            api_ledger.deployments.record(name, {}, [{"job": "db", "index": 0, "disks": [f"{name}-disk"]}], actor="op")
        for name in names:
            assert api_ledger.deployments.get(name).name == name
        assert len(api_ledger.store.repository.cache.cache) <= AGGREGATE_CACHE_SIZE

        # Cached in `api`, changed through `other`: `api` sees the change.
        assert api_ledger.settings.snapshots_enabled()
        assert api_ledger.deployments.get("dep-1").tags == {}
        other_ledger.settings.set_snapshots_enabled(False, actor="op")
        other_ledger.deployments.record("dep-1", {"team": "db"}, [{"job": "db", "index": 0, "disks": ["d"]}], actor="op")
        assert not api_ledger.settings.snapshots_enabled()
        assert api_ledger.deployments.get("dep-1").tags == {"team": "db"}
    finally:
        api_ledger.close()
        other_ledger.close()
