"""Never two CPI calls for the same disk at once: the in-process lock, and the
port adapters fill with one that holds across processes."""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager


class DiskLocks:
    """Never two CPI calls for the same disk at once (in this process).

    `for_disk` returns a context manager; adapters provide one that also holds
    across processes (a PostgreSQL advisory lock, a file lock)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def for_disk(self, disk_cid: str) -> AbstractContextManager[object]:
        with self._guard:
            return self._locks.setdefault(disk_cid, threading.Lock())
