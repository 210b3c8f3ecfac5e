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
    api, other = Ledger(env=ledger_env(url)), Ledger(env=ledger_env(url))
    try:
        api.set_snapshots_enabled(True, actor="op")
        names = [f"dep-{n}" for n in range(AGGREGATE_CACHE_SIZE + 50)]
        for name in names:
            api.record_deployment(name, {}, [{"job": "db", "index": 0, "disks": [f"{name}-disk"]}], actor="op")
        for name in names:
            assert api.get_deployment(name).name == name
        assert len(api.repository.cache.cache) <= AGGREGATE_CACHE_SIZE

        # Cached in `api`, changed through `other`: `api` sees the change.
        assert api.snapshots_enabled()
        assert api.get_deployment("dep-1").tags == {}
        other.set_snapshots_enabled(False, actor="op")
        other.record_deployment("dep-1", {"team": "db"}, [{"job": "db", "index": 0, "disks": ["d"]}], actor="op")
        assert not api.snapshots_enabled()
        assert api.get_deployment("dep-1").tags == {"team": "db"}
    finally:
        api.close()
        other.close()
