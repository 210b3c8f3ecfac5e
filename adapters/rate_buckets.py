"""The buckets of the CPI rate limits, in the event store's database, shared by every
worker process of it (adapters/rate_limit.py wraps the CPIs with them).

- PostgreSQL: one row per bucket, updated in one statement against the
  database's clock, so processes on any number of hosts share one schedule.
- SQLite (one host): the same row under `BEGIN IMMEDIATE`, against the host clock.

The schedule is GCRA (the "virtual scheduling" form of a token bucket): a
bucket keeps the theoretical arrival time `tat` of the next call. A call is
emitted at `max(now, tat - tolerance)` and moves `tat` one interval on, so over
any window of W seconds at most W / interval + burst calls start. A caller that
must wait has its slot reserved in the same round trip; nobody polls.

A throttling answer of the CPI (an `ok_to_retry` error of a type the operator
names, e.g. AWS's `RequestLimitExceeded`) doubles the bucket's interval for
every process (up to 32x); each quiet `recover_after` seconds halves it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from snapledger.domain.rate_limit import Rate

from .store import Database

DDL = """CREATE TABLE IF NOT EXISTS cpi_rate_limits (
    bucket TEXT PRIMARY KEY,
    tat DOUBLE PRECISION NOT NULL,
    slowdown DOUBLE PRECISION NOT NULL,
    slowed_at DOUBLE PRECISION NOT NULL
)"""

MAX_SLOWDOWN = 32.0

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
