"""CPI rate limits shared by every worker process of one event store.

An IaaS API limits the calls of an account, not of a process: `max_in_flight`
bounds one worker's concurrency, so four workers used to send four times the
calls. Here every call first takes a slot from a bucket kept in the event
store's database, so adding workers never exceeds the limit:

- PostgreSQL: one row per bucket, taken `FOR UPDATE` and read against the
  database's clock, so processes on any number of hosts share one schedule.
- SQLite (one host): the same row under `BEGIN IMMEDIATE`, against the host clock.

The schedule is GCRA (the "virtual scheduling" form of a token bucket): a
bucket keeps the theoretical arrival time `tat` of the next call. A call is
emitted at `max(now, tat - tolerance)` and moves `tat` one interval on, so over
any window of W seconds at most W / interval + burst calls start. A caller that
must wait has its slot reserved in the same round trip and sleeps until it;
nobody polls.

A throttling answer of the CPI (an `ok_to_retry` error of a type the operator
names, e.g. AWS's `RequestLimitExceeded`) doubles the bucket's interval for
every process (up to 32x); each quiet `recover_after` seconds halves it again.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import psycopg

from snapledger.domain.cpi import CallRecord, Cpi, CpiError, capability_members
from snapledger.domain.rate_limit import Rate, RateLimit

from .cpi.call_processes import MissedStart, StartWindow, TakeWindow
from .metrics import CPI_SLOTS_MISSED, CPI_START_LEAD
from .store import Database
from snapledger.domain.log import Log

DDL = """CREATE TABLE IF NOT EXISTS cpi_rate_limits (
    bucket TEXT PRIMARY KEY,
    tat DOUBLE PRECISION NOT NULL,
    slowdown DOUBLE PRECISION NOT NULL,
    slowed_at DOUBLE PRECISION NOT NULL
)"""

MAX_SLOWDOWN = 32.0

# The calls that reach the IaaS; the rest of a CPI object (`name`, `last_call`)
# passes through untouched (`info` too: asked once per process and kept). `call`
# is the external CPI's generic entry.
LIMITED_METHODS = frozenset({"snapshot_disk", "delete_snapshot", "current_vm_id", "get_disks",
                             "create_disk", "find_snapshot", "restore_snapshot", "call"})


@runtime_checkable
class StartsOnTime(Protocol):
    """A CPI that starts a call's process within a window itself (the external CPI),
    taking the window from the function it is given once the call is ready to go:
    the slot is reserved then and kept where the call leaves this process, not by a
    thread's sleep, which wakes late when the process is busy (adapters/cpi/reaper.py)."""

    def starting_within(self, window: StartWindow | TakeWindow) -> AbstractContextManager[None]: ...


# A call handed to its spawner may start this much after its slot, at most
# half an interval of its tightest rate: never a whole extra call in a window.
# Why not the slot's whole conformance window (a burst's tolerance, 40 ms at
# 100/s with burst 5), which the bound allows: that margin is what absorbs the
# CPI's own start-up jitter before the IaaS counts the call. Using it for our
# lateness cut the slots given up (2 workers on 2 busy cores: 6 % -> 1 %) but
# let the CPI log 106-109 calls in one second against 100 + 5.
START_GRACE_S = 0.005


class StartLead:
    """How far ahead of now a slot is reserved for a call that its spawner starts
    (StartsOnTime), so that the call reaches the spawner before its slot: the
    recent 99th percentile of that hand-over, times 1.5. It adapts to the host:
    milliseconds when quiet, up to MAX_S when the worker's threads wait for the
    GIL; the cost is that much latency per call and that many more calls in flight."""

    MIN_S, MAX_S, START_S = 0.005, 0.25, 0.02
    SAMPLES, EVERY = 200, 20

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=self.SAMPLES)
        self._seen = 0
        self.seconds = self.START_S

    def observe(self, handover_s: float, missed: bool = False) -> None:
        """A call took `handover_s` from its reservation to its spawner (missed: too late)."""
        self._samples.append(handover_s)
        self._seen += 1
        if missed:  # at once: every call of a slow spell would miss its slot too
            self.seconds = min(max(self.seconds, handover_s * 1.5), self.MAX_S)
        elif self._seen % self.EVERY == 0:
            ordered = sorted(self._samples)
            p99 = ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]
            self.seconds = min(max(p99 * 1.5, self.MIN_S), self.MAX_S)


# PostgreSQL: a slot in one statement, autocommitted, so the row is locked for
# the statement only, not across client round trips (4 of them in a
# transaction, each one a GIL hand-over in a busy worker: at 100 slots/s the
# row's lock hold time was the bound). The clock is read in `r`, after `b` has
# the row locked (a clock read while queueing for the lock would be stale and
# hand out slots in the past). Each quiet `recover_after` since the last
# slowdown halves it, down to 1 (the slowdown is a power of 2: see throttled).
CREATE_BUCKET = ("INSERT INTO cpi_rate_limits (bucket, tat, slowdown, slowed_at) VALUES (%s, 0, 1, 0) "
                 "ON CONFLICT (bucket) DO NOTHING")
RESERVE_PG = """
WITH b AS (SELECT tat, slowdown, slowed_at FROM cpi_rate_limits WHERE bucket = %s FOR UPDATE),
r AS (SELECT tat, slowdown, slowed_at, extract(epoch FROM clock_timestamp())::float8 AS now FROM b),
k AS (SELECT *, CASE WHEN slowdown > 1 THEN greatest(0, least(floor((now - slowed_at) / %s),
                                                              round(ln(slowdown) / ln(2)))) ELSE 0 END AS k FROM r),
n AS (SELECT now, slowdown / power(2, k) AS slowdown, slowed_at + k * %s AS slowed_at,
             greatest(tat, now + %s) AS tat FROM k)
UPDATE cpi_rate_limits AS c SET tat = n.tat + %s * n.slowdown, slowdown = n.slowdown, slowed_at = n.slowed_at
FROM n WHERE c.bucket = %s
RETURNING n.now AS now, n.tat AS tat, n.slowdown AS slowdown
"""


class ClockMapping:
    """The buckets' clock (PostgreSQL's, or this host's wall clock) on this process's
    time.monotonic(), from the reservations' own round trips: the offset of the
    tightest recent one (its error is half its round trip). Why not the wait
    measured from each answer: in a busy worker the thread sees the answer late
    by a different amount each time, and calls late by different amounts bunch."""

    KEEP_S = 30.0  # a tight sample is trusted this long (clocks are slewed, not stepped)

    def __init__(self) -> None:
        self._best: tuple[float, float, float] | None = None  # round trip, offset, when

    def observe(self, sent: float, received: float, clock_value: float) -> None:
        """`clock_value` was read between `sent` and `received` (time.monotonic())."""
        round_trip, offset = received - sent, clock_value - (sent + received) / 2
        best = self._best
        if best is None or round_trip <= best[0] * 1.5 or received - best[2] > self.KEEP_S:
            self._best = (round_trip, offset, received)

    def to_monotonic(self, clock_value: float) -> float:
        assert self._best is not None, "observe() comes first"
        return clock_value - self._best[1]


class SharedBuckets:
    """The buckets' rows: reserve a slot, report a throttling answer."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock  # the table is the composition root's schema step (bootstrap.create_schema)
        self.clock_mapping = ClockMapping()
        self._known: set[str] = set()  # buckets whose row exists

    def _now(self, cur: Any) -> float:
        if self.db.dialect == "postgres":
            row = cur.execute("SELECT extract(epoch from clock_timestamp())::float8 AS now").fetchone()
            return float(row["now"])
        return self.clock()

    def _locked_row(self, cur: Any, bucket: str) -> dict[str, float]:
        """The bucket's row, held until the transaction ends. Read the clock
        only after this: a clock read while queueing for the lock is stale,
        and a stale `now` would hand out slots in the past."""
        lock = " FOR UPDATE" if self.db.dialect == "postgres" else ""
        row = cur.execute(f"SELECT tat, slowdown, slowed_at FROM cpi_rate_limits WHERE bucket = %s{lock}",
                          (bucket,)).fetchone()
        if row is None:
            cur.execute(CREATE_BUCKET, (bucket,))
            row = cur.execute(f"SELECT tat, slowdown, slowed_at FROM cpi_rate_limits WHERE bucket = %s{lock}",
                              (bucket,)).fetchone()
        return dict(row)

    def reserve(self, bucket: str, rate: Rate, recover_after_s: float, lead_s: float = 0.0) -> float:
        """Reserve the next slot of `bucket`, at least `lead_s` from now; returns the seconds to wait for it."""
        return max(self.reserve_start(bucket, rate, recover_after_s, lead_s) - time.monotonic(), 0.0)

    def reserve_slot(self, bucket: str, rate: Rate, recover_after_s: float, lead_s: float = 0.0) -> float:
        """Reserve the next slot of `bucket`; returns when it is, on the bucket's clock."""
        now, tat, slowdown = self._reserve_row(bucket, rate, recover_after_s, lead_s)
        return self._emission(now, tat, slowdown, rate, lead_s)

    def reserve_start(self, bucket: str, rate: Rate, recover_after_s: float, lead_s: float = 0.0) -> float:
        """Reserve the next slot of `bucket`, at least `lead_s` from now; returns when
        it is on this process's time.monotonic()."""
        return self.clock_mapping.to_monotonic(self.reserve_slot(bucket, rate, recover_after_s, lead_s))

    @staticmethod
    def _emission(now: float, tat: float, slowdown: float, rate: Rate, lead_s: float) -> float:
        """When the slot opens: a burst's tolerance before its theoretical arrival time,
        not before `now + lead_s`; the bound holds whatever lead each caller asks (a
        slot is never before `tat - tolerance`, and `tat` moved to at least `now + lead`).
        No burst while slowed down: the IaaS has just said it is too much."""
        return max(now + lead_s, tat - (rate.tolerance_s if slowdown == 1.0 else 0.0))

    def _reserve_row(self, bucket: str, rate: Rate, recover_after_s: float,
                     lead_s: float) -> tuple[float, float, float]:
        """(now, the slot's theoretical arrival time, slowdown) of a newly reserved slot."""
        if self.db.dialect == "postgres":
            return self._reserve_pg(bucket, rate, recover_after_s, lead_s)
        return self._reserve_sqlite(bucket, rate, recover_after_s, lead_s)

    def _reserve_pg(self, bucket: str, rate: Rate, recover_after_s: float, lead_s: float) -> tuple[float, float, float]:
        """(now, the slot's theoretical arrival time, slowdown), in one statement."""
        if bucket not in self._known:
            self.db.query(CREATE_BUCKET + " RETURNING bucket", (bucket,))
            self._known.add(bucket)
        params = (bucket, recover_after_s, recover_after_s, lead_s, rate.interval_s, bucket)
        sent = time.monotonic()
        row = self.db.query(RESERVE_PG, params)[0]
        self.clock_mapping.observe(sent, time.monotonic(), float(row["now"]))
        return float(row["now"]), float(row["tat"]), float(row["slowdown"])

    def _reserve_sqlite(self, bucket: str, rate: Rate, recover_after_s: float,
                        lead_s: float) -> tuple[float, float, float]:
        """The same under BEGIN IMMEDIATE, on this host's clock (one host: no round trips to save)."""
        with self.db.transaction() as cur:
            row = self._locked_row(cur, bucket)
            sent = time.monotonic()
            now = self.clock()
            self.clock_mapping.observe(sent, time.monotonic(), now)
            slowdown, slowed_at = float(row["slowdown"]), float(row["slowed_at"])
            while slowdown > 1.0 and now - slowed_at >= recover_after_s:
                slowdown, slowed_at = max(slowdown / 2, 1.0), slowed_at + recover_after_s
            tat = max(float(row["tat"]), now + lead_s)
            cur.execute("UPDATE cpi_rate_limits SET tat = %s, slowdown = %s, slowed_at = %s WHERE bucket = %s",
                        (tat + rate.interval_s * slowdown, slowdown, slowed_at, bucket))
        return now, tat, slowdown

    def throttled(self, bucket: str, rate: Rate) -> float:
        """The CPI answered that it is throttled: slow the bucket down for all.

        Calls in flight together are throttled together: one doubling per
        period of the rate, however many of them answer so."""
        with self.db.transaction() as cur:
            row = self._locked_row(cur, bucket)
            now = self._now(cur)
            slowdown = float(row["slowdown"])
            if slowdown == 1.0 or now - float(row["slowed_at"]) >= rate.per_s:
                slowdown = min(slowdown * 2, MAX_SLOWDOWN)
            cur.execute("UPDATE cpi_rate_limits SET slowdown = %s, slowed_at = %s WHERE bucket = %s",
                        (slowdown, now, bucket))
        return slowdown


class RateLimitedCpi:
    """A CPI whose every call first waits for its slot in the shared buckets.

    Everything else (name, optional capabilities, `last_call`) is the wrapped
    CPI's, so callers cannot tell the two apart."""

    def __init__(self, cpi: Cpi, limit: RateLimit, buckets: SharedBuckets,
                 sleep: Callable[[float], None] = time.sleep, log: Log | None = None) -> None:
        self._cpi = cpi
        self._limit = limit
        self._buckets = buckets
        self._sleep = sleep
        self._log = log
        self._lead = StartLead()

    # Any: this stands for every member of the wrapped Cpi protocol, each with its
    # own signature; mypy then takes the wrapper for a Cpi (rate_limited's result).
    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._cpi, name)
        if name not in LIMITED_METHODS or not callable(attribute):
            return attribute
        return self._limited(name, attribute)

    def _bucket(self, method: str) -> str:
        return f"{self._cpi.name}:{method}"

    def _limited(self, method: str, call: Callable[..., object]) -> Callable[..., object]:
        def limited(*args: object, **kwargs: object) -> object:
            rates = self._limit.rates_for(str(args[0]) if method == "call" and args else method)
            try:
                if isinstance(self._cpi, StartsOnTime):
                    return self._started_on_time(self._cpi, method, rates, call, args, kwargs)
                wait = self._reserve(method, rates) - time.monotonic()
                if wait > 0:
                    self._sleep(wait)
                return call(*args, **kwargs)
            except CpiError as error:
                if error.ok_to_retry and error.type in self._limit.throttle_errors:
                    for scope, rate in rates:
                        slowdown = self._buckets.throttled(self._bucket(scope), rate)
                        if self._log is not None:
                            self._log.warning("cpi throttled: shared rate slowed down", cpi=self._cpi.name,
                                              method=method, bucket=scope, slowdown=slowdown,
                                              error_type=error.type)
                raise

        return limited

    def _started_on_time(self, cpi: StartsOnTime, method: str, rates: list[tuple[str, Rate]],
                         call: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        """The call, started by its spawner within its slot's grace; a slot missed
        (the call never started) is given up and a new one taken."""
        grace = min([START_GRACE_S, *(rate.interval_s / 2 for _, rate in rates)])
        lead = 0.0  # beyond the process's: a call that missed asks twice what its hand-over took
        while True:
            try:
                return self._call_in_a_slot(cpi, method, rates, grace, lead, lambda: call(*args, **kwargs))
            except MissedStart as missed:
                lead = max(lead, 2 * missed.handover_s)  # so it starts however slow the host (no MAX_S)

    def _call_in_a_slot(self, cpi: StartsOnTime, method: str, rates: list[tuple[str, Rate]], grace: float,
                        lead: float, call: Callable[[], object]) -> object:
        taken: list[tuple[float, StartWindow]] = []

        def take_window() -> StartWindow:  # called by the spawner, the call ready to go
            reserved_at = time.monotonic()
            at = self._reserve(method, rates, max(lead, self._lead.seconds))
            taken.append((reserved_at, StartWindow(at=at, by=at + grace)))
            return taken[-1][1]

        try:
            with cpi.starting_within(take_window):
                result = call()
        except MissedStart as missed:
            missed.handover_s = self._observe_handover(taken, missed.ahead_s, missed=True)
            CPI_SLOTS_MISSED.labels(self._cpi.name).inc()
            if self._log is not None:
                self._log.info("cpi call missed its rate-limit slot; taking another", cpi=self._cpi.name,
                               method=method, late_s=-(missed.ahead_s or 0.0), lead_s=self._lead.seconds)
            raise
        except CpiError:
            self._observe_handover(taken, self._ahead_s())
            raise
        self._observe_handover(taken, self._ahead_s())
        return result

    def _ahead_s(self) -> float | None:
        record = getattr(self._cpi, "last_call", None)  # the call just made (a thread's own)
        ahead = record.extra.get("start_ahead_s") if isinstance(record, CallRecord) else None
        return float(ahead) if isinstance(ahead, (int, float)) else None

    def _observe_handover(self, taken: list[tuple[float, StartWindow]], ahead_s: float | None,
                          missed: bool = False) -> float:
        """How long the call took from its reservation to its spawner (it reached it
        `ahead_s` before its window opened), kept for the next calls' lead."""
        if not taken or ahead_s is None:
            return self._lead.seconds
        reserved_at, window = taken[-1]
        handover = window.at - ahead_s - reserved_at
        self._lead.observe(handover, missed)
        CPI_START_LEAD.labels(self._cpi.name).set(self._lead.seconds)
        return handover

    def _reserve(self, method: str, rates: list[tuple[str, Rate]], lead_s: float = 0.0) -> float:
        """When the call may start (time.monotonic()): the latest of its buckets' slots.
        While the database is away, keep trying: the call has not been made, so
        waiting is safe, and raising would record the CPI call failed (it was not)."""
        delay = 0.1
        while True:
            try:
                return max((self._buckets.reserve_start(self._bucket(scope), rate, self._limit.recover_after_s,
                                                        lead_s) for scope, rate in rates), default=time.monotonic())
            except (psycopg.OperationalError, sqlite3.OperationalError) as error:
                if self._log is not None:
                    self._log.warning("cannot reserve a rate-limit slot yet; retrying", cpi=self._cpi.name,
                                      method=method, error=str(error), retry_in_s=delay)
                self._sleep(delay)
                delay = min(delay * 2, 5.0)

class _Forwarded:
    """A capability member of the wrapped CPI declared on the wrapper's class, so
    that `isinstance(wrapper, FindsSnapshots)` holds exactly when it holds for the
    wrapped CPI (from Python 3.12 on, a protocol's members are looked up on the
    class, past `__getattr__`)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    # Any: whichever capability member it forwards (see RateLimitedCpi.__getattr__).
    def __get__(self, wrapper: RateLimitedCpi | None, owner: type | None = None) -> Any:
        return self if wrapper is None else wrapper.__getattr__(self.name)


_WRAPPERS: dict[tuple[str, ...], type[RateLimitedCpi]] = {}


def _wrapper_class(cpi: Cpi) -> type[RateLimitedCpi]:
    members = capability_members(cpi)
    if members not in _WRAPPERS:
        _WRAPPERS[members] = type("RateLimitedCpi", (RateLimitedCpi,), {name: _Forwarded() for name in members})
    return _WRAPPERS[members]


def rate_limited(cpis: dict[str, Cpi], limits: dict[str, RateLimit | None], db: Database,
                 log: Log | None = None) -> dict[str, Cpi]:
    """The CPIs with a configured limit wrapped (with the same capabilities); the others as they are."""
    if not any(limits.get(name) for name in cpis):
        return dict(cpis)
    buckets = SharedBuckets(db)
    return {name: _wrapper_class(cpi)(cpi, limit, buckets, log=log) if (limit := limits.get(name)) else cpi
            for name, cpi in cpis.items()}
