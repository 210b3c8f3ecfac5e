"""Combine concurrent writes to one aggregate into one save.

A deployment's snapshots all report to the same task aggregate. With many
CPI calls in flight, threads that finish at once all append to that task:
under optimistic concurrency all but one conflict, reload and retry, and the
task's history is replayed again for each retry. Instead, each thread queues
its item under the aggregate's key; whoever holds the key's lock takes every
queued item and writes them in ONE save, then wakes their threads. A thread
returns only after its own item was saved (or with the error that failed it).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class _Queued(Generic[T]):
    __slots__ = ("item", "done", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = threading.Event()
        self.error: BaseException | None = None


class Combiner(Generic[T]):
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._queued: dict[Hashable, list[_Queued[T]]] = {}
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    def submit(self, key: Hashable, item: T, write: Callable[[list[T]], None]) -> None:
        """Write `item` together with whatever else is queued under `key`."""
        queued = _Queued(item)
        with self._guard:
            self._queued.setdefault(key, []).append(queued)
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                with self._guard:
                    batch = self._queued.pop(key, [])
                if batch:  # else an earlier holder wrote ours already
                    try:
                        write([q.item for q in batch])
                    except BaseException as error:
                        for q in batch:
                            q.error = error
                        raise
                    finally:
                        for q in batch:
                            q.done.set()
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)
        queued.done.wait()
        if queued.error is not None:
            raise queued.error
