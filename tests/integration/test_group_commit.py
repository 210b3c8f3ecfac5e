"""Group commit (adapters/group_commit.py): correctness, not speed.

Concurrent saves share one transaction, yet each caller keeps its own
all-or-nothing, durable-before-answered, private-conflict semantics. Real
PostgreSQL and SQLite; the failing database is made to fail for real (a
trigger on the events table, or another connection holding SQLite's lock).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from uuid import UUID, uuid4
from typing import Any
from collections.abc import Iterator

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from snapledger.adapters.group_commit import GroupCommitter
from snapledger.api.executor import RUNTIME
from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.task import Task
from support.runtime import api_client, make_config

N = 24


class Recording:
    """How the fixture's ledger records a save: through its own event store until
    `install` hands the saves to a group committer (the ledger takes it at construction)."""

    def __init__(self) -> None:
        self.put: Any = None
        self.committer: GroupCommitter | None = None

    def __call__(self, events: list[Any]) -> list[Any]:
        return (self.committer.record if self.committer is not None else self.put)(events)


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    url = parse_store_url(store_url)
    env = ledger_env(url)
    if url.kind == "sqlite":
        env["SQLITE_LOCK_TIMEOUT"] = "1"  # the database-error test holds the lock
    recording = Recording()
    ledger = Ledger(env=env, record_events=recording)
    recording.put = ledger.store.events.put
    ledger.store_url = url  # type: ignore[attr-defined]
    ledger.recording = recording  # type: ignore[attr-defined]
    yield ledger
    ledger.close()


def new_task(n: int) -> Task:
    return Task(id=uuid4(), kind="snapshot_deployment", description=f"task {n}", deployment="d", operations=[],
                actor="tester")


def saves_in_one_batch(ledger: Ledger, committer: GroupCommitter, aggregates: list[list[Any]]
                       ) -> list[Any]:
    """Each list saved by its own thread; all queued before the committer starts,
    so they form one batch. Returns each thread's result or exception."""
    results: list[Any] = [None] * len(aggregates)

    def save(i: int) -> None:
        try:
            results[i] = ledger.store.save(*aggregates[i])
        except BaseException as error:
            results[i] = error

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(aggregates))]
    for thread in threads:
        thread.start()
    while committer.pending() < len(aggregates):
        time.sleep(0.001)
    committer.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def install(ledger: Ledger) -> GroupCommitter:
    committer = GroupCommitter(ledger.store.events.put, start=False, max_wait_s=0)
    ledger.recording.committer = committer  # type: ignore[attr-defined]
    return committer


def test_concurrent_saves_share_one_transaction_and_all_are_durable(ledger: Ledger) -> None:
    committer = install(ledger)
    tasks = [new_task(n) for n in range(N)]
    results = saves_in_one_batch(ledger, committer, [[t] for t in tasks])
    committer.stop()
    assert committer.batches == 1 and committer.largest_batch == N
    for task, recordings in zip(tasks, results):
        # Each caller gets back its own recordings, and its task is stored.
        assert [r.domain_event.originator_id for r in recordings] == [task.id]
        assert ledger.tasks.get(str(task.id)).description == task.description
    positions = [r.notification.id for rec in results for r in rec]
    assert len(set(positions)) == N


def test_a_conflict_fails_only_the_conflicting_caller(ledger: Ledger) -> None:
    task = new_task(0)
    ledger.store.save(task)
    # Two copies of one task: one appends version 2, the other is now stale.
    ahead, stale = ledger.tasks.get(str(task.id)), ledger.tasks.get(str(task.id))
    ahead.start(worker="w", actor="tester")
    ledger.store.save(ahead)
    stale.start(worker="w", actor="tester")

    committer = install(ledger)
    others = [new_task(n) for n in range(1, N)]
    results = saves_in_one_batch(ledger, committer, [[stale], *[[t] for t in others]])
    committer.stop()
    assert isinstance(results[0], IntegrityError)
    assert committer.fallbacks == 1  # the shared transaction failed, then each alone
    for other, result in zip(others, results[1:]):
        assert not isinstance(result, BaseException), result
        assert ledger.tasks.get(str(other.id)).description == other.description
    assert ledger.tasks.get(str(task.id)).version == 2


def test_two_callers_writing_one_aggregate_are_never_in_one_batch(ledger: Ledger) -> None:
    task = new_task(0)
    ledger.store.save(task)
    first, second = ledger.tasks.get(str(task.id)), ledger.tasks.get(str(task.id))
    first.start(worker="a", actor="tester")
    second.start(worker="b", actor="tester")
    committer = install(ledger)
    others = [new_task(n) for n in range(1, 5)]
    results = saves_in_one_batch(ledger, committer, [[first], [second], *[[t] for t in others]])
    committer.stop()
    # The second was held for the next batch: it conflicts alone, nobody else fails.
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], IntegrityError)
    assert all(not isinstance(r, BaseException) for r in results[2:])
    assert committer.fallbacks == 0


def test_a_caller_saving_several_aggregates_commits_all_or_nothing(ledger: Ledger) -> None:
    task = new_task(0)
    ledger.store.save(task)
    stale = ledger.tasks.get(str(task.id))
    ahead = ledger.tasks.get(str(task.id))
    ahead.start(worker="w", actor="tester")
    ledger.store.save(ahead)
    stale.start(worker="w", actor="tester")
    committer = install(ledger)
    companion = new_task(1)  # saved with the stale task: must not be stored
    independent = new_task(2)
    results = saves_in_one_batch(ledger, committer, [[companion, stale], [independent]])
    committer.stop()
    assert isinstance(results[0], IntegrityError)
    assert companion.id not in ledger.store.repository
    assert independent.id in ledger.store.repository


def test_a_database_error_fails_every_caller_of_the_batch(ledger: Ledger) -> None:
    committer = install(ledger)
    tasks = [new_task(n) for n in range(8)]
    blocker = _block_writes(ledger.store_url)  # type: ignore[attr-defined]
    try:
        results = saves_in_one_batch(ledger, committer, [[t] for t in tasks])
    finally:
        blocker.close()
    committer.stop()
    assert all(isinstance(r, OperationalError) for r in results), results
    assert committer.committed == 0


async def test_database_error_over_http_is_503_for_every_caller(tmp_path: Path, store_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent commands over real HTTP while every write fails: each is 503, none
    is acknowledged, and nothing of them is stored."""
    from snapledger.adapters import bootstrap

    def short_lock_env(url: Any) -> dict[str, str]:
        env = ledger_env(url)
        if url.kind == "sqlite":
            env["SQLITE_LOCK_TIMEOUT"] = "1"  # fail in 1 s, not 10, while the test holds the lock
        return env

    monkeypatch.setattr(bootstrap, "ledger_env", short_lock_env)
    config = make_config(tmp_path, store_url, enable_snapshots=True)
    url = parse_store_url(store_url)
    async with api_client(config, roles={"api"}) as client:
        resp = await client.put("/deployments/prod", json={
            "instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        assert resp.status == 200
        blocker = _block_writes(url)
        try:
            # As many as the API's executor runs at once: one round of failing batches.
            responses = await asyncio.gather(*(client.post("/deployments/prod/snapshots") for _ in range(8)))
            statuses = [r.status for r in responses]
            bodies = [await r.json() for r in responses]
        finally:
            blocker.close()
        assert statuses == [503] * 8, bodies
        assert all(b["code"] == "unavailable" and "task_id" not in b for b in bodies)
    assert _stored_tasks(url) == 0


class _Blocker:
    def __init__(self, close: Any) -> None:
        self.close = close


def _block_writes(url: Any) -> _Blocker:
    if url.kind == "postgres":
        conn = psycopg.connect(url.conninfo(), autocommit=True)
        conn.execute("""CREATE OR REPLACE FUNCTION bench_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'disk full (test)' USING ERRCODE = '53100'; END $$""")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON ledger_events "
                     "FOR EACH ROW EXECUTE FUNCTION bench_refuse()")

        def close() -> None:
            conn.execute("DROP TRIGGER refuse ON ledger_events")
            conn.close()

        return _Blocker(close)
    conn = sqlite3.connect(url.sqlite_path, timeout=0, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")

    def close_sqlite() -> None:
        conn.execute("ROLLBACK")
        conn.close()

    return _Blocker(close_sqlite)


def _stored_tasks(url: Any) -> int:
    topic = "snapledger.domain.task:Task.Queued"
    if url.kind == "postgres":
        with psycopg.connect(url.conninfo()) as conn:
            return conn.execute("SELECT count(*) FROM ledger_events WHERE topic = %s", (topic,)).fetchone()[0]
    conn = sqlite3.connect(url.sqlite_path)
    try:
        return conn.execute("SELECT count(*) FROM stored_events WHERE topic = ?", (topic,)).fetchone()[0]
    finally:
        conn.close()


async def test_many_concurrent_commands_over_http_each_get_their_own_durable_task(tmp_path: Path,
                                                                                   store_url: str) -> None:
    config = make_config(tmp_path, store_url, enable_snapshots=True)
    async with api_client(config, roles={"api"}) as client:
        resp = await client.put("/deployments/prod", json={
            "instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        assert resp.status == 200
        responses = await asyncio.gather(*(client.post("/deployments/prod/snapshots") for _ in range(N)))
        assert [r.status for r in responses] == [202] * N
        task_ids = [(await r.json())["task_id"] for r in responses]
        assert len(set(task_ids)) == N
        runtime = client.server.app[RUNTIME]
        committer = runtime.committer
        assert committer is not None and committer.committed >= N
        for task_id in task_ids:
            # Durable when acknowledged: readable from the event store, with its own snapshot.
            task = runtime.ledger.tasks.get(task_id)
            assert len(task.operations) == 1
            snapshot = runtime.ledger.snapshots.get(UUID(task.operations[0]))
            assert snapshot.task_id == task_id
