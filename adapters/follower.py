"""Following the event log: one loop for the projector and the worker, on both backends.

Why not the library's `ApplicationSubscription`: it hands out one notification
at a time (views could not commit once per batch, which is where rebuild speed
comes from), it does not exist on SQLite, and its pull thread dies for good
when PostgreSQL restarts. Here LISTEN/NOTIFY (PostgreSQL) or an in-process
signal (every save of this process) only *wakes* the loop; the loop itself
selects batches after its last position, so catch-up, live following and
recovery after an outage are one code path. See docs/decisions.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from snapledger.projections.tracking import save_position

from .store import EVENTS_CHANNEL, Database, StoreUrl
from snapledger.domain.log import Log

if TYPE_CHECKING:
    from snapledger.domain.application import Ledger

Batch = list[tuple[int, Any]]  # (notification id, domain event)


class ChangeSignal:
    """Broadcast "the log may have grown" to every follower of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[threading.Event] = []

    def subscribe(self) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events.append(event)
        return event

    def fire(self) -> None:
        with self._lock:
            for event in self._events:
                event.set()


class TrackedPosition:
    """A follower's position, kept in `projection_tracking` under its own name."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name

    def load(self) -> int:
        saved = self.saved()
        return 0 if saved is None else saved

    def saved(self) -> int | None:
        """The saved position; None when this follower has never saved one."""
        rows = self.db.query("SELECT position FROM projection_tracking WHERE name = %s", (self.name,))
        return int(rows[0]["position"]) if rows else None

    def save(self, position: int) -> None:
        with self.db.transaction() as cur:
            save_position(cur, self.name, position)


class StoreHealth:
    """Whether the database is reachable, as the LISTEN connection sees it.

    That connection notices a lost server at once (and a returning one within
    a couple of seconds), so the API answers 503 immediately during an outage
    instead of letting each request wait out the event store's connection
    retries (10 attempts in `eventsourcing`)."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.reason = ""

    @property
    def healthy(self) -> bool:
        return self.down_since is None

    def mark_down(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.reason = reason

    def mark_up(self) -> None:
        self.down_since = None
        self.reason = ""


class PostgresListener:
    """LISTENs on the events table's channel and fires the signal; reconnects forever."""

    def __init__(self, url: StoreUrl, signal: ChangeSignal, log: Log, health: StoreHealth | None = None) -> None:
        self.url = url
        self.signal = signal
        self.log = log
        self.health = health or StoreHealth()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url.conninfo(), autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    if not self.health.healthy:
                        self.log.info("database reachable again")
                    self.health.mark_up()
                    backoff = 0.2
                    self.signal.fire()  # events may have been missed while disconnected
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self.signal.fire()
            except psycopg.Error as error:
                self.health.mark_down(str(error).splitlines()[0] if str(error) else type(error).__name__)
                self.log.warning("listen connection lost; retrying", error=str(error), retry_in_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)


class LogFollower:
    """Reads the log in batches after `position` and hands each batch to `handle`.

    `handle` must make the batch's effects durable (or idempotent) before it
    returns; the follower then advances. On errors it backs off and retries the
    same batch, so a database outage pauses following and nothing is skipped.
    """

    def __init__(self, name: str, ledger: Ledger, signal: ChangeSignal,
                 handle: Callable[[Batch], None], start_position: Callable[[], int],
                 log: Log, topics: Sequence[str] = (), batch_size: int = 500,
                 poll_interval: float = 1.0) -> None:
        self.name = name
        self.ledger = ledger
        self.handle = handle
        self.start_position = start_position
        self.log = log.bind(follower=name)
        self.topics = list(topics)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.position: int | None = None
        self._wake = signal.subscribe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        """Process one batch; returns how many events it held."""
        if self.position is None:
            self.position = self.start_position()
        notifications = self.ledger.store.recorder.select_notifications(
            start=self.position, limit=self.batch_size, topics=self.topics, inclusive_of_start=False
        )
        if not notifications:
            return 0
        batch = [(n.id, self.ledger.store.mapper.to_domain_event(n)) for n in notifications]
        self.handle(batch)
        self.position = notifications[-1].id
        return len(batch)

    def run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            self._wake.clear()
            try:
                count = self.step()
                backoff = 0.1
            except Exception as error:  # keep following through outages; never skip
                self.log.error("follower step failed; retrying", error=repr(error), retry_in_s=backoff)
                self.position = None  # re-read the durable position
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if count < self.batch_size:
                self._wake.wait(self.poll_interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"follow-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_until(self, position: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.position is not None and self.position >= position:
                return True
            time.sleep(0.005)
        return False
