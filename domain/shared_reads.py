"""Concurrent reads of one aggregate share one store read (decision 19).

The write side (a Combiner of one task's outcomes into one save) is gone:
outcomes no longer write the task (decision 39), and separate saves of
separate snapshots share nothing but group commit's batches.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar
from collections.abc import Callable, Hashable

T = TypeVar("T")


class _Round:
    __slots__ = ("done", "error", "started", "value")

    def __init__(self) -> None:
        self.started = False
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SharedReads:
    """Concurrent reads of one aggregate share ONE store read.

    Every command reads the settings (is
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
