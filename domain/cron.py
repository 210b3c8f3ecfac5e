"""The BOSH Director cron dialect (fugit 1.13): when a schedule fires.

Syntax and meaning are fugit 1.13's, read in :mod:`snapledger.domain.cron_syntax`:
``min hour dom month dow`` or ``sec min hour dom month dow`` (seconds FIRST),
optionally followed by a time zone (an IANA name such as ``Europe/Berlin`` or an
offset ``+09:00`` / ``-0530``). Without a zone the schedule runs in UTC (fugit
would use the host's zone, which is UTC on a Director VM; a ledger must not
depend on where it runs). This module matches wall-clock times against that
reading and maps them to instants; it is our own arithmetic because fugit's day
rules (negative days, ``#-2``, ``%``, ``&``, its OR of the day fields) are beyond
croniter.

Daylight saving time (a deliberate departure from fugit, which skips a wall time
that falls into a gap and, on a UTC host, fires a repeated one twice):

* If the schedule fires in every hour (hour field ``*``) it fires once for every
  matching hour of *real* time: wall times skipped by spring-forward are skipped,
  and both passes through a fall-back hour fire (24 fires per 24 h).
* Otherwise the schedule names wall-clock times, and each such time fires once
  per day: a time inside the spring-forward gap fires at the first instant after
  the gap (``30 2 * * * Europe/Berlin`` fires at 03:00 CEST = 01:00 UTC on
  2026-03-29; several times inside one gap collapse into that single fire), and
  a time repeated by fall-back fires on its first occurrence only (02:30 CEST =
  00:30 UTC on 2026-10-25, not again at 02:30 CET).
"""

from __future__ import annotations

import bisect
import heapq
from calendar import monthrange
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo

from .cron_syntax import CronError, CronSpec, parse_spec

__all__ = ["CronError", "CronSchedule", "validate"]

Times = tuple[int, ...]    # a field's values in ascending order (CronSpec.hours and the like)
HMS = tuple[int, int, int]  # a time of day

_DAY = timedelta(days=1)
# How far a search for the next matching day goes (fugit gives up after 2048 steps of
# its cursor): a century, so refusing a schedule whose days never come costs a scan of
# ~0.15 s once, where it enters, not the 400-year Gregorian cycle.
_HORIZON_DAYS = 36525
# fugit's reference for "%" (EtOrbi::RWEEK_REF_DEFAULT, a Monday; older fugit used
# 2019-01-01, which reads "sun%2" the other way round).
_RWEEK_REF = date(2018, 12, 31)
# Margin around a start point near a DST change: no zone shifts by more than this.
_DST_MARGIN = timedelta(hours=3)


def _rday(d: date, tz: tzinfo) -> int:
    """et-orbi's EoTime#rday: whole days from the reference noon to this day's noon.

    It divides real seconds, so on a day whose offset is an hour ahead of the
    reference's (summer in the north) the count is one lower, as fugit's is.
    """
    noon = datetime.combine(d, time(12), tz).astimezone(UTC)
    ref = datetime.combine(_RWEEK_REF, time(12), tz).astimezone(UTC)
    return (noon - ref) // _DAY


def _day_matcher(spec: CronSpec) -> Callable[[date], bool]:
    """fugit's Cron#month_match? and #day_match? for one local date."""
    months, monthdays, weekdays, tz = spec.months, spec.monthdays, spec.weekdays, spec.tz

    def monthday_ok(d: date) -> bool:
        last = monthrange(d.year, d.month)[1] + 1
        return any((last + x if x < 1 else x) == d.day for x in monthdays)  # type: ignore

    def weekday_ok(d: date) -> bool:
        wday = d.isoweekday() % 7
        for wd, extra in weekdays:  # type: ignore[union-attr]
            if wd != wday:
                continue
            if extra is None:
                return True
            if isinstance(extra, tuple):   # "%mod+plus": the reference week modulo mod
                mod, plus = extra
                if (_rday(d, tz) // 7) % mod == plus % mod:
                    return True
            else:                          # "#n": n-th in the month, negative from its end
                dim = monthrange(d.year, d.month)[1]
                if extra in ((d.day - 1) // 7 + 1, -((dim - d.day) // 7 + 1)):
                    return True
        return False

    def matches(d: date) -> bool:
        if months is not None and d.month not in months:
            return False
        if weekdays is not None and monthdays is not None:
            if spec.day_and:
                return weekday_ok(d) and monthday_ok(d)
            return weekday_ok(d) or monthday_ok(d)  # classic cron: either day field
        return ((weekdays is None or weekday_ok(d)) and
                (monthdays is None or monthday_ok(d)))

    return matches


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule; build it with :meth:`parse`. See the module docstring."""

    expression: str
    tz: tzinfo
    _spec: CronSpec = field(repr=False, compare=False)
    _day_ok: Callable[[date], bool] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        spec = parse_spec(expression)
        schedule = cls(expression, spec.tz, spec, _day_matcher(spec))
        # fugit fails at its first evaluation ("too many loops") on a schedule whose
        # days never come, such as "0 0 1 * mon#2&"; refuse it where it enters.
        if next(schedule._days(date(2000, 1, 1), forward=True), None) is None:
            raise CronError(expression, "its day of month and day of week never occur "
                            "together (no matching day in 100 years)", "day of month")
        return schedule

    @property
    def _hourly(self) -> bool:
        return len(self._spec.hours) == 24

    # -- days and wall times -----------------------------------------------------

    def _days(self, start: date, forward: bool) -> Iterator[date]:
        months = self._spec.months
        d, step = start, (_DAY if forward else -_DAY)
        for _ in range(_HORIZON_DAYS):
            if months is not None and d.month not in months:
                # Skip the rest of the month in one step, as fugit's inc_month does.
                if forward:
                    d = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
                else:
                    d = d.replace(day=1) - _DAY
                continue
            if self._day_ok(d):
                yield d
            try:
                d += step
            except OverflowError:
                return

    def _walls(self, start: datetime, forward: bool) -> Iterator[datetime]:
        """Matching naive wall times from ``start`` (inclusive) on, in wall order."""
        spec = self._spec
        hs, ms, ss = spec.hours, spec.minutes, spec.seconds
        first = start.date()
        for d in self._days(first, forward):
            at = (start.hour, start.minute, start.second) if d == first else None
            for h, m, s in (_times_from(hs, ms, ss, at) if forward
                            else _times_until(hs, ms, ss, at)):
                yield datetime(d.year, d.month, d.day, h, m, s)

    # -- wall times to instants ----------------------------------------------------

    def _instants(self, start: datetime, forward: bool) -> Iterator[datetime]:
        """Fire instants (aware UTC) in time order from about ``start``, per the DST rules."""
        tz = self.tz
        wall = start.astimezone(tz).replace(tzinfo=None, microsecond=0, fold=0)
        if isinstance(tz, timezone):  # a fixed offset: every wall time exists once
            for w in self._walls(wall, forward):
                yield w.replace(tzinfo=tz).astimezone(UTC)
            return
        if _offset_changes_near(start, tz):
            # Wall order and time order differ around the change: start early enough.
            wall = wall - _DST_MARGIN if forward else wall + _DST_MARGIN
        hourly = self._hourly
        pending: list[datetime | _Rev] = []  # second passes of repeated hours, not yet due
        last = None
        for w in self._walls(wall, forward):
            first_pass = w.replace(tzinfo=tz).astimezone(UTC)
            second_pass = w.replace(tzinfo=tz, fold=1).astimezone(UTC)
            exists = first_pass.astimezone(tz).replace(tzinfo=None) == w
            if hourly:
                if not exists:
                    continue  # every real hour fires once; a skipped hour has no fires
                t, other = (first_pass, second_pass) if forward else (second_pass, first_pass)
                if other != t:
                    heapq.heappush(pending, other if forward else _Rev(other))
            else:
                t = first_pass if exists else _gap_end(w, tz)
            while pending and (_key(pending[0]) < t if forward else _key(pending[0]) > t):
                last = _key(heapq.heappop(pending))
                yield last
            if t != last:
                last = t
                yield t
        while pending:
            yield _key(heapq.heappop(pending))

    def _iter(self, start: datetime, backwards: bool) -> Iterator[datetime]:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError(f"datetime must be timezone-aware, got {start!r}")
        for t in self._instants(start, forward=not backwards):
            if (t <= start) if backwards else (t > start):
                yield t

    # -- the public questions ------------------------------------------------------

    def next_fire(self, after: datetime) -> datetime:
        """First fire strictly after ``after`` (aware), as an aware UTC datetime."""
        for t in self._iter(after, backwards=False):
            return t
        raise CronError(self.expression, f"no fire time after {after.isoformat()}")

    def next_fires(self, after: datetime, n: int) -> list[datetime]:
        out: list[datetime] = []
        for t in self._iter(after, backwards=False):
            if len(out) >= n:
                break
            out.append(t)
        return out

    def previous_fire(self, at_or_before: datetime) -> datetime:
        """Latest fire ``<= at_or_before``, as aware UTC (e.g. to detect a missed fire)."""
        for t in self._iter(at_or_before, backwards=True):
            return t
        raise CronError(self.expression, f"no fire time at or before {at_or_before.isoformat()}")

    def fires_between(self, start: datetime, end: datetime, limit: int = 1000) -> list[datetime]:
        """Fires with ``start < t <= end``; at most the earliest ``limit`` of them."""
        out: list[datetime] = []
        for t in self._iter(start, backwards=False):
            if t > end or len(out) >= limit:
                break
            out.append(t)
        return out


class _Rev:
    """Reverses heap order, so one heap of pending first passes serves backwards walks."""

    __slots__ = ("t",)

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __lt__(self, other: _Rev) -> bool:
        return self.t > other.t


def _key(item: datetime | _Rev) -> datetime:
    return item.t if isinstance(item, _Rev) else item


def _offset_changes_near(t: datetime, tz: tzinfo) -> bool:
    offsets = {(t + k * _DST_MARGIN).astimezone(tz).utcoffset() for k in (-1, 0, 1)}
    return len(offsets) > 1


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant after the spring-forward gap that swallowed ``wall``."""
    lo = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)   # before the change
    hi = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)   # after it
    after_offset = hi.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid
    return hi


def _times_from(hs: Times, ms: Times, ss: Times, at: HMS | None) -> Iterator[HMS]:
    """The day's (h, m, s) in ascending order, from ``at`` (inclusive) or all."""
    if at is None:
        for h in hs:
            for m in ms:
                for s in ss:
                    yield h, m, s
        return
    h0, m0, s0 = at
    for h in hs[bisect.bisect_left(hs, h0):]:
        for m in (ms[bisect.bisect_left(ms, m0):] if h == h0 else ms):
            for s in (ss[bisect.bisect_left(ss, s0):] if (h, m) == (h0, m0) else ss):
                yield h, m, s


def _times_until(hs: Times, ms: Times, ss: Times, at: HMS | None) -> Iterator[HMS]:
    """The day's (h, m, s) in descending order, until ``at`` (inclusive) or all."""
    if at is None:
        for h in reversed(hs):
            for m in reversed(ms):
                for s in reversed(ss):
                    yield h, m, s
        return
    h0, m0, s0 = at
    for h in reversed(hs[:bisect.bisect_right(hs, h0)]):
        for m in reversed(ms[:bisect.bisect_right(ms, m0)] if h == h0 else ms):
            for s in reversed(ss[:bisect.bisect_right(ss, s0)] if (h, m) == (h0, m0)
                              else ss):
                yield h, m, s


def validate(expression: str) -> None:
    """Raise CronError if ``expression`` is not a valid schedule."""
    CronSchedule.parse(expression)
