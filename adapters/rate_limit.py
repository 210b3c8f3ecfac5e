"""CPI rate limits shared by every worker process of one event store.

An IaaS API limits the calls of an account, not of a process: `max_in_flight`
bounds one worker's concurrency, so four workers used to send four times the
calls. Here every call first takes a slot from a bucket kept in the event
store's database (adapters/rate_buckets.py), so adding workers never exceeds
the limit. An external CPI's call is started at its slot by its own reaper,
not by a thread's sleep (decision 43); a throttling answer slows the shared
rate down for every process.
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
from .rate_buckets import SharedBuckets
from .store import Database
from snapledger.domain.log import Log

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
