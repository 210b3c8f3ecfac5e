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
from collections.abc import Callable
from typing import Any

import psycopg

from snapledger.domain.cpi import Cpi, CpiError, capability_members
from snapledger.domain.rate_limit import Rate, RateLimit

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


class SharedBuckets:
    """The buckets' rows: reserve a slot, report a throttling answer."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock  # the table is the composition root's schema step (bootstrap.create_schema)

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
            cur.execute("INSERT INTO cpi_rate_limits (bucket, tat, slowdown, slowed_at) VALUES (%s, 0, 1, 0) "
                        "ON CONFLICT (bucket) DO NOTHING", (bucket,))
            row = cur.execute(f"SELECT tat, slowdown, slowed_at FROM cpi_rate_limits WHERE bucket = %s{lock}",
                              (bucket,)).fetchone()
        return dict(row)

    def reserve(self, bucket: str, rate: Rate, recover_after_s: float) -> float:
        """Reserve the next slot of `bucket`; returns the seconds to wait for it."""
        return self.reserve_slot(bucket, rate, recover_after_s)[1]

    def reserve_slot(self, bucket: str, rate: Rate, recover_after_s: float) -> tuple[float, float]:
        """The reserved slot: when it is (the bucket's clock), and how long until then.

        The wait counts from when the bucket's clock was read, less the time
        since (the commit, measured here): a slow commit must not push the
        call late and bunch it with the next ones."""
        with self.db.transaction() as cur:
            row = self._locked_row(cur, bucket)
            now = self._now(cur)
            read_at = time.monotonic()
            slowdown, slowed_at = float(row["slowdown"]), float(row["slowed_at"])
            while slowdown > 1.0 and now - slowed_at >= recover_after_s:
                slowdown, slowed_at = max(slowdown / 2, 1.0), slowed_at + recover_after_s
            interval = rate.interval_s * slowdown
            tat = max(float(row["tat"]), now)
            # No burst while slowed down: the IaaS has just said it is too much.
            emit_at = max(now, tat - (rate.tolerance_s if slowdown == 1.0 else 0.0))
            cur.execute("UPDATE cpi_rate_limits SET tat = %s, slowdown = %s, slowed_at = %s WHERE bucket = %s",
                        (tat + interval, slowdown, slowed_at, bucket))
        return emit_at, max(emit_at - now - (time.monotonic() - read_at), 0.0)

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
            wait = self._reserve(method, rates)
            if wait > 0:
                self._sleep(wait)
            try:
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

    def _reserve(self, method: str, rates: list[tuple[str, Rate]]) -> float:
        """The wait for a slot in each of the call's buckets. While the
        database is away, keep trying: the call has not been made, so waiting
        is safe, and raising would record the CPI call failed (it was not)."""
        delay = 0.1
        while True:
            try:
                return max((self._buckets.reserve(self._bucket(scope), rate, self._limit.recover_after_s)
                            for scope, rate in rates), default=0.0)
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
