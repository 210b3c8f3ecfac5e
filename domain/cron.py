"""The BOSH Director cron dialect (rufus-scheduler / fugit), evaluated with croniter.

Syntax: ``min hour dom month dow`` or ``sec min hour dom month dow`` (seconds
FIRST, as in fugit), optionally followed by a time zone (IANA name such as
``Europe/Berlin`` or an offset ``+09:00`` / ``-0530``). Without a zone the
schedule runs in UTC (fugit would use the host's local time; a ledger must not
depend on where it runs). ``@yearly @annually @monthly @weekly @daily
@midnight @noon @hourly`` may be followed by a zone too (``@daily UTC``).

Fields accept lists, ranges (``22-2`` wraps around), steps (``*/5``, ``1-30/5``;
``15/30`` means ``15-59/30``), month names ``jan..dec`` and weekday names
``sun..sat`` (``7`` is Sunday). Day of month accepts ``L``/``last``/``-1``
(last day); other negative days are rejected because croniter cannot express
them. Day of week accepts ``mon#1`` (first Monday, up to ``#5``) and ``fri#-1``
/ ``fri#L`` / ``fri#last`` (last Friday). When both day fields are restricted a
day matches if EITHER matches (classic cron OR, as in fugit); a day field that
covers every day counts as unrestricted. Quartz ``?`` and ``W`` and fugit's
``%``, ``~`` and ``&`` extensions are rejected with a CronError.

Daylight saving time -- fire times are computed on the wall clock of the
schedule's zone, and:

* If the hour field is ``*`` the job is an "every hour" job and fires once for
  every matching hour of *real* time: wall times skipped by spring-forward are
  skipped, and both passes through a fall-back hour fire (24 fires per 24 h).
* Otherwise the schedule names wall-clock times, and each such time fires once
  per day: a time inside the spring-forward gap fires at the first instant
  after the gap (``30 2 * * * Europe/Berlin`` fires at 03:00 CEST = 01:00 UTC on
  2026-03-29; several times inside one gap collapse into that single fire),
  and a time repeated by fall-back fires on its first occurrence only (02:30
  CEST = 00:30 UTC on 2026-10-25, not again at 02:30 CET).
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

__all__ = ["CronError", "CronSchedule", "validate"]

UTC = timezone.utc
FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_BOUNDS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23),
           "day of month": (1, 31), "month": (1, 12), "day of week": (0, 7)}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {"month": {n: i + 1 for i, n in enumerate(_MONTHS)},
          "day of week": {n: i for i, n in enumerate(_DAYS)}}
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 exists in leap years
_SPECIALS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
             "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@noon": "0 12 * * *", "@hourly": "0 * * * *"}
_OFFSET_RE = re.compile(r"([+-])(\d\d):?(\d\d)")
_ITEM_RE = re.compile(r"(\*|[a-z0-9]+)(?:-([a-z0-9]+))?(?:/(\d+))?")
_UNSUPPORTED = {"?": "is not supported (Quartz syntax)",
                "%": "is not supported (fugit modulo extension)",
                "~": "is not supported (fugit random extension)",
                "&": "is not supported (fugit day-AND extension)"}


class CronError(ValueError):
    """A schedule that is not valid in snapledger's cron dialect."""

    def __init__(self, expression: str, detail: str, field: str | None = None,
                 token: str | None = None) -> None:
        super().__init__(f"invalid cron schedule {expression!r}: {detail}")
        self.expression, self.field, self.token = expression, field, token


def _err(expression: str, fname: str, token: str, why: str) -> CronError:
    return CronError(expression, f"token {token!r} in field {fname!r} {why}", fname, token)


@dataclass(frozen=True)
class _Field:
    values: frozenset[int]
    last_day: bool = False                   # dom L
    nth: frozenset[str] = frozenset()        # dow in croniter spelling: "1#2", "l5"


def _value(expression: str, fname: str, tok: str, item: str, end: bool = False) -> int:
    lo, hi = _BOUNDS[fname]
    if tok.isdigit():
        v = int(tok)
    elif tok in _NAMES.get(fname, {}):
        v = _NAMES[fname][tok]
    elif end and fname == "day of month" and tok in ("l", "last"):
        return 31  # "15-L": the 15th to the last day, whatever the month's length
    else:
        raise _err(expression, fname, item, "is not valid")
    if not lo <= v <= hi:
        raise _err(expression, fname, item, f"is out of range ({lo}-{hi})")
    return v


def _parse_field(expression: str, fname: str, text: str) -> _Field:
    low = text.lower()
    for ch, why in _UNSUPPORTED.items():
        if ch in low:
            raise _err(expression, fname, ch, why)
    if fname == "day of month" and "w" in low:
        raise _err(expression, fname, text, "is not supported (Quartz nearest-weekday 'W')")
    if "#" in low and fname != "day of week":
        raise _err(expression, fname, text, "is not valid ('#' is only allowed in day of week)")
    lo, hi = _BOUNDS[fname]
    values: set[int] = set()
    nth: set[str] = set()
    last_day = False
    for raw in text.split(","):
        item = raw.lower()  # names are case-insensitive; messages quote `raw`
        if fname == "day of month" and item in ("l", "last", "-1"):
            last_day = True
            continue
        if fname == "day of month" and re.fullmatch(r"-\d+", raw):
            raise _err(expression, fname, raw, "is not supported (of the negative days only "
                       "-1, the last day, can be expressed; use L for it)")
        if "#" in item:
            day, _, n = item.partition("#")
            wd = _value(expression, fname, day, raw)
            if n in ("-1", "l", "last"):
                nth.add(f"l{wd % 7}")
            elif n in ("1", "2", "3", "4", "5"):
                nth.add(f"{wd % 7}#{n}")
            elif n in ("-2", "-3", "-4", "-5"):
                raise _err(expression, fname, raw,
                           "is not supported (only #-1 counts from the end)")
            else:
                raise _err(expression, fname, raw,
                           "is not valid (expected #1..#5, #-1, #L or #last)")
            continue
        m = _ITEM_RE.fullmatch(item)
        if not m or (m[1] == "*" and m[2]):
            raise _err(expression, fname, raw or text, "is not valid")
        step = int(m[3]) if m[3] else 1
        if not 1 <= step <= 99:  # fugit accepts one- and two-digit steps ("*/27" hours is 0)
            raise _err(expression, fname, raw, "has a step outside 1-99")
        top = 6 if fname == "day of week" else hi  # "*" and "a/n" stop at Saturday, not at 7
        if m[1] == "*":
            start, end = lo, top
        else:
            start = _value(expression, fname, m[1], raw)
            end = (_value(expression, fname, m[2], raw, end=True) if m[2]
                   else top if m[3] else start)  # "a/n" runs to the top, like "a-top/n"
        if fname == "day of week" and start > end:
            start %= 7  # "7-2" is Sunday to Tuesday
        # Expand ourselves: croniter reads an equal range such as "5-5" as the whole cycle.
        seq = list(range(start, end + 1)) if start <= end else \
            list(range(start, top + 1)) + list(range(lo, end + 1))  # wrap: "22-2"
        values.update(seq[::step])
    if fname == "day of week":
        values = {v % 7 for v in values}
    return _Field(frozenset(values), last_day, frozenset(nth))


def _parse_tz(expression: str, token: str) -> tzinfo:
    m = _OFFSET_RE.fullmatch(token)
    if m:
        hours, minutes = int(m[2]), int(m[3])
        if hours > 23 or minutes > 59:
            raise CronError(expression, f"time zone {token!r} is out of range", "time zone", token)
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if m[1] == "-" else delta)
    try:
        return ZoneInfo(token)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(expression, f"unknown time zone {token!r}", "time zone", token) from None


def _is_tz(token: str) -> bool:
    # A trailing token is a zone unless it could be a day-of-week field ("mon-fri", "fri#L").
    if _OFFSET_RE.fullmatch(token):
        return True
    words = re.findall(r"[a-z]+", token.lower())
    return token[:1].isalpha() and not all(w in _DAYS or w in ("l", "last") for w in words)


def _join(values: frozenset[int], fname: str) -> str:
    lo, hi = _BOUNDS[fname]
    full = set(range(lo, 7 if fname == "day of week" else hi + 1))
    return "*" if values >= full else ",".join(map(str, sorted(values)))


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule; build it with :meth:`parse`. See the module docstring."""

    expression: str
    tz: tzinfo
    _crons: tuple[str, ...] = field(repr=False, compare=False)  # croniter alternatives, OR-ed
    _hourly: bool = field(repr=False, compare=False)           # hour field is "*"

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        if not isinstance(expression, str):
            raise TypeError(f"cron expression must be a str, not {type(expression).__name__}")
        tokens = expression.split()
        tz: tzinfo = UTC
        if tokens and tokens[0].startswith("@"):
            if tokens[0].lower() not in _SPECIALS or len(tokens) > 2:
                raise CronError(expression, f"unknown or malformed shortcut {tokens[0]!r}",
                                None, tokens[0])
            if len(tokens) == 2:
                tz = _parse_tz(expression, tokens[1])
            tokens = _SPECIALS[tokens[0].lower()].split()
        elif tokens and _is_tz(tokens[-1]):
            try:
                tz = _parse_tz(expression, tokens[-1])
                tokens.pop()
            except CronError:
                # "* * * * Mon-Funday" is a bad day-of-week field, not a bad zone.
                if len(tokens) - 1 in (5, 6) or len(tokens) not in (5, 6):
                    raise
        if len(tokens) not in (5, 6):
            raise CronError(expression, f"found {len(tokens)} fields, expected 5 (min hour dom "
                            "month dow) or 6 (sec min hour dom month dow), plus an optional "
                            "time zone")
        if len(tokens) == 5:
            tokens.insert(0, "0")
        sec, mnt, hour, dom, month, dow = (
            _parse_field(expression, f, t) for f, t in zip(FIELDS, tokens))

        # Feb 30th never happens; croniter would only notice after searching 50 years.
        if not dom.last_day and not any(d <= _MAX_DAYS[m - 1] for m in month.values
                                        for d in dom.values):
            raise _err(expression, "day of month", tokens[3],
                       f"never occurs in month(s) {tokens[4]!r}")

        # OR between the day fields is done here as a union of croniter schedules with
        # one day field each: croniter's own OR keeps "#" as an intersection, so
        # "1 * mon#1" would lose the 1st, and it cannot mix "mon#1" with plain "fri".
        dom_s = _join(dom.values, "day of month") if dom.values else ""
        if dom.last_day and dom_s != "*":
            dom_s = f"{dom_s},l" if dom_s else "l"
        dom_restricted = dom_s != "*"
        dow_plain = _join(dow.values, "day of week") if dow.values else ""
        dow_restricted = bool(dow.nth) or dow_plain not in ("*", "")
        days = [(dom_s, "*")] if dom_restricted or not dow_restricted else []
        if dow_restricted:
            days += [("*", d) for d in (dow_plain, ",".join(sorted(dow.nth))) if d]
        head = f"{_join(mnt.values, 'minute')} {_join(hour.values, 'hour')}"
        tail = f"{_join(month.values, 'month')}"
        crons = tuple(f"{head} {d} {tail} {w} {_join(sec.values, 'second')}" for d, w in days)
        return cls(expression, tz, crons, _join(hour.values, "hour") == "*")

    # -- evaluation ---------------------------------------------------------

    def _walk(self, cron: str, start: datetime, backwards: bool) -> Iterator[datetime]:
        it = croniter(cron, start.astimezone(self.tz))
        while True:
            try:
                local = it.get_prev(datetime) if backwards else it.get_next(datetime)
            except CroniterBadDateError:  # nothing within croniter's 50-year horizon
                return
            # croniter fires a wall time on BOTH passes through a fall-back hour; only
            # "every hour" schedules should (see module docstring).
            repeat = local.astimezone(UTC) != local.replace(fold=0).astimezone(UTC)
            if self._hourly or not repeat:
                yield local.astimezone(UTC)

    def _iter(self, start: datetime, backwards: bool) -> Iterator[datetime]:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError(f"datetime must be timezone-aware, got {start!r}")
        previous = None
        walks = [self._walk(c, start, backwards) for c in self._crons]
        for t in heapq.merge(*walks, reverse=backwards):
            if t != previous:  # the day alternatives may both match one day
                yield t
                previous = t

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
        # Fires fall on whole seconds and croniter's get_prev is strict, so start
        # just past the second that contains at_or_before.
        start = at_or_before.replace(microsecond=0) + timedelta(seconds=1)
        for t in self._iter(start, backwards=True):
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


def validate(expression: str) -> None:
    """Raise CronError if ``expression`` is not a valid schedule."""
    CronSchedule.parse(expression)
