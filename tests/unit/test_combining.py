"""Combiner: concurrent items for one key are written together, each exactly once,
and a thread returns only after its own item was written (or with its error)."""

from __future__ import annotations

import threading
import time

import pytest

from snapledger.domain.combining import Combiner


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
