"""SharedReads: concurrent reads of one key share one read, never one that began
before the caller asked."""

from __future__ import annotations

import threading
import time

import pytest

from snapledger.domain.shared_reads import SharedReads


class _Store:
    """A store whose reads can be held open; each read returns the state when it began."""

    def __init__(self) -> None:
        self.state = 0
        self.reads = 0
        self.hold = threading.Event()
        self.hold.set()
        self.reading = threading.Event()

    def load(self) -> int:
        self.reads += 1
        seen = self.state
        self.reading.set()
        self.hold.wait(5)
        return seen


def _in_thread(fn: object, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(fn()))  # type: ignore[operator]
    thread.start()
    return thread


def test_a_read_never_returns_a_state_older_than_the_call() -> None:
    reads, store = SharedReads(), _Store()
    store.hold.clear()
    early: list[int] = []
    first = _in_thread(lambda: reads.read("settings", store.load), early)
    assert store.reading.wait(5)  # the first read is in flight, it saw state 0
    store.state = 1  # a write commits; then a caller asks
    late: list[int] = []
    second = _in_thread(lambda: reads.read("settings", store.load), late)
    time.sleep(0.05)
    store.hold.set()
    first.join(5)
    second.join(5)
    assert early == [0]
    assert late == [1]  # not the in-flight read's older answer: a read that began after the call


def test_callers_arriving_during_a_read_share_the_next_one() -> None:
    reads, store = SharedReads(), _Store()
    store.hold.clear()
    results: list[int] = []
    threads = [_in_thread(lambda: reads.read("dep", store.load), results)]
    assert store.reading.wait(5)
    threads += [_in_thread(lambda: reads.read("dep", store.load), results) for _ in range(20)]
    time.sleep(0.1)
    store.hold.set()
    for thread in threads:
        thread.join(5)
    assert len(results) == 21
    assert store.reads == 2  # 21 callers, two reads: the one in flight and the one everybody else joined


def test_keys_do_not_wait_for_each_other_and_a_failed_read_raises() -> None:
    reads, store = SharedReads(), _Store()
    store.hold.clear()
    blocked: list[int] = []
    thread = _in_thread(lambda: reads.read("slow", store.load), blocked)
    assert store.reading.wait(5)
    assert reads.read("other", lambda: 7) == 7  # another key reads at once

    def fail() -> int:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError, match="database away"):
        reads.read("broken", fail)
    store.hold.set()
    thread.join(5)
    assert blocked == [0]
