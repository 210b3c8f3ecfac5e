"""Two workers (two lock holders, as two processes would be) never run CPI
calls for the same disk at once; different disks do not wait for each other."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from snapledger.adapters.config import Config
from snapledger.adapters.bootstrap import build_disk_locks
from snapledger.adapters.store import ensure_schema, parse_store_url


@pytest.fixture
def two_holders(store_url: str, tmp_path: Path):
    url = parse_store_url(store_url)
    if url.kind == "postgres":
        ensure_schema(url)
    config = Config(data_dir=tmp_path / "data")
    a, b = build_disk_locks(url, config), build_disk_locks(url, config)
    yield a, b
    a.close()
    b.close()


def test_same_disk_waits_other_disk_does_not(two_holders) -> None:
    a, b = two_holders
    acquired = threading.Event()

    def other_worker(disk: str) -> None:
        with b.for_disk(disk):
            acquired.set()

    with a.for_disk("disk-1"):
        free = threading.Thread(target=other_worker, args=("disk-2",))
        free.start()
        free.join(timeout=10)
        assert acquired.is_set()  # another disk: no waiting
        acquired.clear()
        blocked = threading.Thread(target=other_worker, args=("disk-1",))
        blocked.start()
        blocked.join(timeout=0.5)
        assert blocked.is_alive() and not acquired.is_set()  # the same disk: waits
    blocked.join(timeout=10)
    assert acquired.is_set()  # and proceeds once released
