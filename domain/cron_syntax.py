"""The text of a BOSH cron schedule, read exactly as fugit 1.13 reads it.

The BOSH Director parses ``snapshot_schedule`` with fugit 1.13.0
(``fugit/lib/fugit/cron.rb``); operators' schedules mean what fugit says they
mean, odd as parts of it are, so this module follows its grammar and its
``expand``/``range``/``determine_*`` rules step for step (the comments name the
fugit method each piece mirrors). It only turns text into a :class:`CronSpec`
(value sets and day rules); :mod:`snapledger.domain.cron` finds fire times.

Deliberate departures from fugit (documented in the README's schedule section):
no zone means UTC, not the host's zone; zone names fugit "repairs" by dropping
trailing characters (``Europe/Berlinx``, ``GMT+5``) are refused; ``~`` (random)
is refused; offsets of 12 hours and more, upper-case shortcuts (``@DAILY``) and
leading zeros (``007``, ``01`` as a weekday) are accepted; ``%0`` (which makes
fugit divide by zero when it evaluates) and schedules that never fire are
refused where they enter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["FIELDS", "CronError", "CronSpec", "parse_spec"]

FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
# fugit's (min, max) per field; hour 24 and weekday 7 are read as 0 after expansion.
_BOUNDS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23),
           "day of month": (1, 31), "month": (1, 12)}
_SHOWN_BOUNDS = {"second": "0-59", "minute": "0-59", "hour": "0-24", "month": "1-12",
                 "day of month": "1-31, or -1 to -31 counting from the month's end",
                 "day of week": "0-7"}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MAXDAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # fugit's MAXDAYS: Feb 29 exists
_SPECIALS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
             "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@noon": "0 12 * * *", "@hourly": "0 * * * *"}

# fugit's piece regexes (Parser#mos, #hou, #dom, #mon, #dow), as atomic groups: raabro
# matches each piece once and never backtracks into it. Leading zeros are accepted
# (a harmless departure: fugit refuses "007" and a weekday "01").
_VALUE = {
    "second": r"(?>\d+)", "minute": r"(?>\d+)", "hour": r"(?>\d+)",
    "day of month": r"(?>-?\d+|last|l)",
    "month": r"(?>\d+|" + "|".join(_MONTHS) + ")",
    "day of week": r"(?>\d+|" + "|".join(_DAYS) + ")",
}
_SLASH = r"(?:/(\d+))"  # fugit allows one or two digits; checked below for a clear message


def _element_re(fname: str) -> re.Pattern[str]:
    v = _VALUE[fname]
    # elt := "/n" | ("*" | v ["-" v]) ["/n"]          (fugit: mos_elt, sorws_*, r_*)
    return re.compile(rf"(?:(\*)|({v})(?:-({v}))?)?{_SLASH}?", re.IGNORECASE)


_ELEMENT = {f: _element_re(f) for f in FIELDS}
_HASH = re.compile(rf"({_VALUE['day of week']})#(-?\d+|last|l)", re.IGNORECASE)  # h_dow
_MOD = re.compile(rf"({_VALUE['day of week']})%(\d+)(?:\+(\d+))?", re.IGNORECASE)  # mod_dow
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")                                  # _tz_delta
_ZONE_NAME = re.compile(r"[A-Z][a-zA-Z0-9+\-]+(/[A-Z][a-zA-Z0-9+\-_]+){0,2}")  # _tz_name
_UNSUPPORTED = {"?": "is not supported (Quartz syntax)",
                "~": "is not supported (fugit's random '~'; write the value you want)"}


class CronError(ValueError):
    """A schedule that is not valid in snapledger's cron dialect."""

    def __init__(self, expression: str, detail: str, field: str | None = None,
                 token: str | None = None) -> None:
        super().__init__(f"invalid cron schedule {expression!r}: {detail}")
        self.expression, self.field, self.token = expression, field, token


def _err(expression: str, fname: str, token: str, why: str) -> CronError:
    return CronError(expression, f"token {token!r} in field {fname!r} {why}", fname, token)


@dataclass(frozen=True)
class CronSpec:
    """What a schedule matches, in fugit's terms; ``None`` means the field is unrestricted.

    ``monthdays`` may hold negative days (-1 is the last day of the month).
    ``weekdays`` holds ``(wday, None)``, ``(wday, n)`` for ``#n`` (negative: from the
    month's end) or ``(wday, (mod, plus))`` for ``%mod+plus``.
    """

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    monthdays: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: tuple[tuple[int, int | tuple[int, int] | None], ...] | None
    day_and: bool
    tz: tzinfo


# -- values and elements ------------------------------------------------------------

def _bound(fname: str, text: str) -> int:
    """fugit's Parser#rewrite_bound: names, L/last as -1, else the integer."""
    low = text.lower()
    if fname == "month" and low in _MONTHS:
        return _MONTHS.index(low) + 1
    if fname == "day of week" and low in _DAYS:
        return _DAYS.index(low)
    if fname == "day of month" and low in ("l", "last"):
        return -1
    return int(low)


def _check_value(expression: str, fname: str, item: str, v: int) -> None:
    if fname == "day of month":
        ok = 1 <= abs(v) <= 31
    elif fname == "day of week":
        ok = 0 <= v <= 7
    else:
        lo, hi = _BOUNDS[fname]
        ok = lo <= v <= hi or (fname == "hour" and v == 24)  # fugit: hour 24 is 0
    if not ok:
        raise _err(expression, fname, item, f"is out of range ({_SHOWN_BOUNDS[fname]})")


def _range(expression: str, fname: str, item: str, sta: int, edn: int, sla: int
           ) -> list[int] | None:
    """fugit's Cron#range: the values from sta to edn, wrapping at max, every sla-th."""
    lo, hi = _BOUNDS[fname]
    if sta == lo and edn == hi and sla == 1:
        return None  # exactly the full range counts as unrestricted ("1-31", "*/1")
    if (sta < 0 < edn) or (edn < 0 < sta):
        raise _err(expression, fname, item, "is not valid (a range of days must be all "
                   "positive or all counted from the month's end)")
    omax = hi
    if sta < 0:
        lo, hi = -hi, -1
    out: list[int] = []
    cur = sta
    while True:
        out.append(cur)
        if cur == edn:
            break
        cur += 1
        if cur > hi:
            cur = lo
            if edn > hi:
                edn = edn - hi - 1
        if len(out) > 2 * omax:  # fugit fails the same way ("too many loops")
            raise _err(expression, fname, item, "is not valid")
    return list(dict.fromkeys(out[::sla]))


def _expand(expression: str, fname: str, item: str) -> list[int] | None:
    """One list element of a non-weekday field (fugit's Cron#expand); None = unrestricted."""
    m = _ELEMENT[fname].fullmatch(item)
    if not m or not (m[1] or m[2] or m[4]):
        raise _bad(expression, fname, item)
    sta = _bound(fname, m[2]) if m[2] else None
    edn = _bound(fname, m[3]) if m[3] else None
    for v in (sta, edn):
        if v is not None:
            _check_value(expression, fname, item, v)
    sla = _step(expression, fname, item, m[4])
    if sla is not None and sla < 1:
        raise _err(expression, fname, item, "has a step outside 1-99")
    if sla is not None and edn is None:
        edn = _BOUNDS[fname][1]  # "a/n" runs to the field's top: "15/30" is 15-59/30
    if sta is None and edn is None and sla is None:
        return None  # "*"
    if sta is not None and edn is None:
        return [sta]
    lo, hi = _BOUNDS[fname]
    sla = sla or 1
    sta = lo if sta is None else sta
    if edn is None or (edn < 0 < sta):
        edn = hi  # fugit: "5-L" (and "5--3") run from the 5th to the 31st
    return _range(expression, fname, item, sta, edn, sla)


def _step(expression: str, fname: str, item: str, text: str | None) -> int | None:
    if text is None:
        return None
    if len(text) > 2:  # fugit's slash is /\d\d?/
        raise _err(expression, fname, item, "has a step outside 1-99")
    return int(text)


def _bad(expression: str, fname: str, item: str) -> CronError:
    """A clear reason for an element fugit's grammar does not accept."""
    for digits in re.findall(r"(?<![/#%+\d])-?\d+", item):
        try:
            _check_value(expression, fname, item, int(digits) if fname == "day of month"
                         else abs(int(digits)))
        except CronError as error:
            return error
    if "#" in item and fname != "day of week":
        return _err(expression, fname, item,
                    "is not valid ('#' is only allowed in day of week)")
    if "%" in item and fname != "day of week":
        return _err(expression, fname, item,
                    "is not valid ('%' is only allowed in day of week)")
    if fname == "day of month" and "w" in item.lower():
        return _err(expression, fname, item, "is not supported (Quartz nearest-weekday 'W')")
    return _err(expression, fname, item, "is not valid")


def _determine(expression: str, fname: str, items: list[str]) -> tuple[int, ...] | None:
    """fugit's Cron#do_determine: the union of the elements; any "*" makes the field free."""
    values: list[int] = []
    free = False
    for item in items:
        got = _expand(expression, fname, item)
        if got is None:
            free = True
        else:
            values.extend(0 if fname == "hour" and v == 24 else v for v in got)
    return None if free else tuple(sorted(set(values)))


def _weekdays(expression: str, items: list[str]
              ) -> tuple[tuple[int, int | tuple[int, int] | None], ...] | None:
    """fugit's Cron#determine_weekdays, with its reading of "a/n" ("1/2" is Monday only)."""
    fname = "day of week"
    out: list[tuple[int, int | tuple[int, int] | None]] = []
    for item in items:
        if "#" in item:
            m = _HASH.fullmatch(item)
            if not m:
                raise _err(expression, fname, item,
                           "is not valid (expected a weekday and #1..#5, #-1..#-5, #L or #last)")
            wd = _bound(fname, m[1])
            _check_value(expression, fname, item, wd)
            n = m[2].lower()
            nth = -1 if n.startswith("l") else int(n)
            if not 1 <= abs(nth) <= 5:
                raise _err(expression, fname, item,
                           "is not valid (expected a weekday and #1..#5, #-1..#-5, #L or #last)")
            out.append((wd, nth))
            continue
        if "%" in item:
            m = _MOD.fullmatch(item)
            if not m:
                raise _err(expression, fname, item,
                           "is not valid (expected a weekday, %N and an optional +M)")
            wd = _bound(fname, m[1])
            _check_value(expression, fname, item, wd)
            mod, plus = int(m[2]), int(m[3] or 0)
            if mod == 0:
                raise _err(expression, fname, item, "has a modulo of 0")
            out.append((wd, (mod, plus)))
            continue
        m = _ELEMENT[fname].fullmatch(item)
        if not m or not (m[1] or m[2] or m[4]):
            raise _bad(expression, fname, item)
        a = _bound(fname, m[2]) if m[2] else None
        z = _bound(fname, m[3]) if m[3] else None
        for v in (a, z):
            if v is not None:
                _check_value(expression, fname, item, v)
        sl = _step(expression, fname, item, m[4])
        if sl is not None:
            z = z if z is not None else (a if a is not None else 6)
            a = a or 0
            if a > z:
                z += 7
            days = range(a, z + 1, max(sl, 1))  # fugit: "/0" steps by 1
        elif a is not None and z is not None:  # (the pattern has an end only after a start)
            days = range(a, (z + 7 if a > z else z) + 1)
        elif a is not None:
            days = range(a, a + 1)
        else:
            continue  # "*" adds nothing: "*,mon" is Monday only, as in fugit
        out.extend((d - 7 if d > 6 else d, None) for d in days)
    wds = sorted({(0 if wd == 7 else wd, h) for wd, h in out}, key=repr)
    return tuple(wds) or None


# -- time zones -----------------------------------------------------------------------

def parse_tz(expression: str, token: str) -> tzinfo:
    m = _OFFSET.fullmatch(token)
    if m:
        hours, minutes = int(m[2]), int(m[3])
        if hours > 23 or minutes > 59:
            raise CronError(expression, f"time zone {token!r} is out of range", "time zone", token)
        if minutes not in (0, 15, 30, 45):  # fugit's _tz_delta: quarter hours only
            raise CronError(expression, f"time zone {token!r}: the minutes of an offset must "
                            "be 00, 15, 30 or 45", "time zone", token)
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if m[1] == "-" else delta)
    if _ZONE_NAME.fullmatch(token):
        try:
            return ZoneInfo(token)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise CronError(expression, f"unknown time zone {token!r}", "time zone", token)


def _looks_like_zone(token: str) -> bool:
    # A trailing token is a zone unless it could be a day-of-week field ("mon-fri", "fri#L").
    if _OFFSET.fullmatch(token):
        return True
    words = re.findall(r"[a-z]+", token.lower())
    return token[:1].isalpha() and not all(w in _DAYS or w in ("l", "last") for w in words)


# -- the whole schedule ---------------------------------------------------------------

def _items(expression: str, fname: str, text: str) -> list[str]:
    for ch, why in _UNSUPPORTED.items():
        if ch in text:
            raise _err(expression, fname, ch, why)
    if "&" in text:
        raise _err(expression, fname, "&", "is not valid here (the day-AND marker '&' goes "
                   "at the end of the day of month or day of week field)")
    items = [i for i in text.split(",") if i]  # fugit allows ",1", "1,,2" and "1,"
    if not items:
        raise _err(expression, fname, text, "is not valid")
    return items


def _compact(expression: str, tokens: list[str], monthdays: tuple[int, ...] | None,
             months: tuple[int, ...] | None) -> tuple[frozenset[int] | None,
                                                      frozenset[int] | None]:
    """fugit's Cron#compact_month_days: drop (month, day) pairs that never exist.

    It narrows BOTH lists to the surviving pairs, so "0 0 31 2,3 mon" never fires on a
    February Monday, and refuses the schedule if no pair survives.
    """
    if months is None or monthdays is None:
        return (None if monthdays is None else frozenset(monthdays),
                None if months is None else frozenset(months))
    pairs = [(m, d) for m in months for d in monthdays if d <= MAXDAYS[m - 1]]
    if not pairs:
        raise _err(expression, "day of month", tokens[3],
                   f"never occurs in month(s) {tokens[4]!r}")
    return frozenset(d for _, d in pairs), frozenset(m for m, _ in pairs)


def _fields(expression: str, tokens: list[str], tz: tzinfo) -> CronSpec:
    if len(tokens) == 5:
        tokens = ["0", *tokens]
    sec, mnt, hour, dom, month, dow = tokens
    day_and = False
    for text in (dom, dow):  # fugit's ldom_/ldow: an optional '&' ends either day field
        if text.endswith("&"):
            day_and = True
    dom_t, dow_t = dom.removesuffix("&"), dow.removesuffix("&")
    seconds = _determine(expression, "second", _items(expression, "second", sec))
    minutes = _determine(expression, "minute", _items(expression, "minute", mnt))
    hours = _determine(expression, "hour", _items(expression, "hour", hour))
    monthdays = _determine(expression, "day of month", _items(expression, "day of month", dom_t))
    months = _determine(expression, "month", _items(expression, "month", month))
    weekdays = _weekdays(expression, _items(expression, "day of week", dow_t))
    mdays, mons = _compact(expression, tokens, monthdays, months)
    return CronSpec(seconds=seconds or tuple(range(60)), minutes=minutes or tuple(range(60)),
                    hours=hours or tuple(range(24)), monthdays=mdays, months=mons,
                    weekdays=weekdays, day_and=day_and, tz=tz)


def parse_spec(expression: str) -> CronSpec:
    """Read a schedule; raise CronError naming the field and token that is wrong."""
    if not isinstance(expression, str):
        raise TypeError(f"cron expression must be a str, not {type(expression).__name__}")
    tokens = expression.split()
    tz: tzinfo = UTC
    if tokens and tokens[0].startswith("@"):
        if tokens[0].lower() not in _SPECIALS or len(tokens) > 2:
            raise CronError(expression, f"unknown or malformed shortcut {tokens[0]!r}",
                            None, tokens[0])
        if len(tokens) == 2:
            tz = parse_tz(expression, tokens[1])
        return _fields(expression, _SPECIALS[tokens[0].lower()].split(), tz)
    if tokens and _looks_like_zone(tokens[-1]):
        try:
            tz = parse_tz(expression, tokens[-1])
            tokens.pop()
        except CronError:
            # "* * * * Mon-Funday" is a bad day-of-week field, not a bad zone.
            if len(tokens) - 1 in (5, 6) or len(tokens) not in (5, 6):
                raise
    if len(tokens) not in (5, 6):
        raise CronError(expression, f"found {len(tokens)} fields, expected 5 (min hour dom "
                        "month dow) or 6 (sec min hour dom month dow), plus an optional "
                        "time zone")
    return _fields(expression, tokens, tz)
