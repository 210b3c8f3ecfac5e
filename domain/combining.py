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
from typing import Any, Generic, TypeVar
from collections.abc import Callable, Hashable

T = TypeVar("T")


class _Queued(Generic[T]):
    __slots__ = ("done", "error", "item")

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


class _Round:
    __slots__ = ("done", "error", "started", "value")

    def __init__(self) -> None:
        self.started = False
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SharedReads:
    """Concurrent reads of one aggregate share ONE store read.

    The read side of the Combiner: every command reads the settings (is
    `enable_snapshots` on?) and its deployment; at a few hundred commands a
    second, most of those reads ask the store the same question at the same
    moment. Per key, one read is in flight at a time; whoever asks meanwhile
    joins the NEXT read, which starts when the current one is done. So every
    caller gets a state read after it asked (never an older one: a write
    committed before the call is always seen), and under load one read serves
    many callers. The value is shared: callers must not change it.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: dict[Hashable, _Round] = {}  # the next read of a key, not started yet
        self._running: dict[Hashable, _Round] = {}  # the read of a key in flight

    def read(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._guard:
            joined = self._waiting.get(key)
            if joined is None:
                joined = self._waiting[key] = _Round()
                lead, before = True, self._running.get(key)
            else:
                lead, before = False, None
        if lead:
            if before is not None:
                before.done.wait()  # callers that arrive meanwhile join this round
            with self._guard:
                del self._waiting[key]
                self._running[key] = joined
                joined.started = True
            try:
                joined.value = load()
            except BaseException as error:
                joined.error = error
            finally:
                with self._guard:
                    if self._running.get(key) is joined:
                        del self._running[key]
                joined.done.set()
        else:
            joined.done.wait()
        if joined.error is not None:
            raise joined.error
        value: T = joined.value
        return value
