"""Per-disk locks that hold across worker processes.

"Never two CPI calls for the same disk at once": within one process a thread
lock is enough, but several worker processes (or hosts) can each hold a
different snapshot request for the same disk. PostgreSQL: a session advisory
lock per disk, on a connection held for the call (released by PostgreSQL if
the worker dies). SQLite (one host): an flock on a file per disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg_pool import ConnectionPool
from snapledger.domain.disk_locks import DiskLocks


def _key(disk_cid: str) -> int:
    # A signed 64-bit key: the advisory-lock space; collisions only serialise more.
    return int.from_bytes(hashlib.blake2b(f"disk:{disk_cid}".encode(), digest_size=8).digest(), "big", signed=True)


class PostgresDiskLocks(DiskLocks):
    """On an autocommit pool of its own (adapters/bootstrap.py opens it): a lock
    is held for a whole CPI call, so it must not take a connection the event
    store or the views need meanwhile."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        super().__init__()
        self.pool = pool

    @contextmanager
    def hold(self, disk_cid: str) -> Iterator[None]:
        with super().for_disk(disk_cid), self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_key(disk_cid),))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_key(disk_cid),))

    def for_disk(self, disk_cid: str) -> Any:
        return self.hold(disk_cid)

    def close(self) -> None:
        self.pool.close()


class FileDiskLocks(DiskLocks):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def hold(self, disk_cid: str) -> Iterator[None]:
        with super().for_disk(disk_cid):
            name = hashlib.blake2b(disk_cid.encode(), digest_size=16).hexdigest()
            fd = os.open(self.directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def for_disk(self, disk_cid: str) -> Any:
        return self.hold(disk_cid)

    def close(self) -> None:
        pass
