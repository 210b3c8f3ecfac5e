"""Combiner: concurrent items for one key are written together, each exactly once,
and a thread returns only after its own item was written (or with its error).
SharedReads: concurrent reads of one key share one read, never one that began
before the caller asked."""

from __future__ import annotations

import threading
import time

import pytest

from snapledger.domain.combining import Combiner, SharedReads


def test_items_queued_while_a_write_runs_go_out_in_the_next_single_write() -> None:
    combiner: Combiner[int] = Combiner()
    writes: list[list[int]] = []
    first_write_started, release_first = threading.Event(), threading.Event()

    def write(items: list[int]) -> None:
        writes.append(items)
        if len(writes) == 1:
            first_write_started.set()
            release_first.wait(5)

    returned: list[int] = []

    def submit(n: int) -> None:
        combiner.submit("task-1", n, write)
        returned.append(n)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert first_write_started.wait(5)
    others = [threading.Thread(target=submit, args=(n,)) for n in range(1, 9)]
    for t in others:
        t.start()
    wait_queued(combiner, "task-1", 8)
    assert returned == []  # nobody is answered before their item is written
    release_first.set()
    for t in [first, *others]:
        t.join(5)
    assert writes[0] == [0]
    assert sorted(n for batch in writes[1:] for n in batch) == list(range(1, 9))
    assert len(writes) < 9  # combined, not one write per item
    assert sorted(returned) == list(range(9))


def wait_queued(combiner: Combiner[int], key: str, n: int) -> None:
    for _ in range(500):
        with combiner._guard:
            if len(combiner._queued.get(key, [])) == n:
                return
        time.sleep(0.01)
    raise AssertionError(f"{n} items never queued")


def test_keys_do_not_wait_for_each_other() -> None:
    combiner: Combiner[str] = Combiner()
    blocked, release = threading.Event(), threading.Event()

    def slow(items: list[str]) -> None:
        blocked.set()
        release.wait(5)

    holder = threading.Thread(target=combiner.submit, args=("a", "x", slow))
    holder.start()
    assert blocked.wait(5)
    written: list[list[str]] = []
    combiner.submit("b", "y", written.append)  # returns although "a" is still writing
    assert written == [["y"]]
    release.set()
    holder.join(5)


def test_every_item_of_a_failed_write_gets_the_error() -> None:
    combiner: Combiner[int] = Combiner()
    started, release = threading.Event(), threading.Event()
    calls = 0

    def write(items: list[int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            release.wait(5)
            return
        raise RuntimeError(f"database said no to {items}")

    errors: list[BaseException] = []

    def submit(n: int) -> None:
        try:
            combiner.submit("k", n, write)
        except RuntimeError as error:
            errors.append(error)

    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert started.wait(5)
    rest = [threading.Thread(target=submit, args=(n,)) for n in (1, 2, 3)]
    for t in rest:
        t.start()
    wait_queued(combiner, "k", 3)
    release.set()
    for t in [first, *rest]:
        t.join(5)
    assert calls == 2
    assert len(errors) == 3 and all("[1, 2, 3]" in str(e) for e in errors)


def test_a_lone_item_is_written_at_once() -> None:
    combiner: Combiner[int] = Combiner()
    written: list[list[int]] = []
    combiner.submit("k", 7, written.append)
    assert written == [[7]]
    with pytest.raises(ValueError):
        combiner.submit("k", 8, lambda items: (_ for _ in ()).throw(ValueError("no")))
    assert combiner._locks == {} and combiner._queued == {}


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
