"""Tests for the BOSH/fugit cron dialect in snapledger.domain.cron."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, UTC
from zoneinfo import ZoneInfo

import pytest

from snapledger.domain.cron import CronError, CronSchedule, validate

UTC = UTC
START = datetime(2026, 3, 10, 6, 59, 59, tzinfo=UTC)


def u(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(expression: str, n: int, after: datetime = START) -> list[datetime]:
    return CronSchedule.parse(expression).next_fires(after, n)


# -- the verified rows from the fugit study (start 2026-03-10 06:59:59 UTC) ---------

@pytest.mark.parametrize("expression, expected", [
    ("0 0 7 * * * UTC", [u(2026, 3, 10, 7), u(2026, 3, 11, 7)]),
    ("*/5 * * * * UTC", [u(2026, 3, 10, 7, 0), u(2026, 3, 10, 7, 5), u(2026, 3, 10, 7, 10)]),
    ("0 0,30 * * * * UTC", [u(2026, 3, 10, 7, 0), u(2026, 3, 10, 7, 30), u(2026, 3, 10, 8, 0)]),
    ("0 0 L * * UTC", [u(2026, 3, 31), u(2026, 4, 30)]),
    ("0 5 * * mon#1 UTC", [u(2026, 4, 6, 5), u(2026, 5, 4, 5)]),
    ("0 7 * * fri#-1 UTC", [u(2026, 3, 27, 7), u(2026, 4, 24, 7)]),
    ("0 0 12 1 * * +09:00", [u(2026, 4, 1, 3), u(2026, 5, 1, 3)]),
    ("*/10 * * * * *", [u(2026, 3, 10, 7, 0, 0), u(2026, 3, 10, 7, 0, 10),
                        u(2026, 3, 10, 7, 0, 20)]),
])
def test_verified_fires(expression, expected):
    assert fires(expression, len(expected)) == expected


def test_quartz_question_mark_row_does_not_parse():
    with pytest.raises(CronError) as exc:
        CronSchedule.parse("0 0 7 ? * * UTC")
    assert str(exc.value) == ("invalid cron schedule '0 0 7 ? * * UTC': token '?' in field "
                              "'day of month' is not supported (Quartz syntax)")
    assert (exc.value.field, exc.value.token) == ("day of month", "?")


# -- dialect: names, lists, ranges, steps, shortcuts, zones --------------------------

@pytest.mark.parametrize("expression, expected", [
    # 2026-03-10 is a Tuesday
    ("0 9 * * mon,wed,FRI", [u(2026, 3, 11, 9), u(2026, 3, 13, 9), u(2026, 3, 16, 9)]),
    ("0 9 * * mon-wed", [u(2026, 3, 10, 9), u(2026, 3, 11, 9), u(2026, 3, 16, 9)]),
    ("0 9 * * fri-mon", [u(2026, 3, 13, 9), u(2026, 3, 14, 9), u(2026, 3, 15, 9),
                         u(2026, 3, 16, 9), u(2026, 3, 20, 9)]),        # wraps past Saturday
    ("0 9 * * 7", [u(2026, 3, 15, 9), u(2026, 3, 22, 9)]),               # 7 is Sunday
    ("0 9 * * 6-7", [u(2026, 3, 14, 9), u(2026, 3, 15, 9), u(2026, 3, 21, 9)]),
    ("0 9 * * */3", [u(2026, 3, 11, 9), u(2026, 3, 14, 9), u(2026, 3, 15, 9)]),  # sun,wed,sat
    ("0 0 1 jan,Jul *", [u(2026, 7, 1), u(2027, 1, 1)]),
    ("0 0 1 may-jun *", [u(2026, 5, 1), u(2026, 6, 1), u(2027, 5, 1)]),
    ("0 0 1 nov-feb *", [u(2026, 11, 1), u(2026, 12, 1), u(2027, 1, 1), u(2027, 2, 1),
                         u(2027, 11, 1)]),                              # month range wraps
    ("0 0 1 */4 *", [u(2026, 5, 1), u(2026, 9, 1), u(2027, 1, 1)]),      # 1,5,9
    ("10-20/5 8 * * *", [u(2026, 3, 10, 8, 10), u(2026, 3, 10, 8, 15), u(2026, 3, 10, 8, 20),
                         u(2026, 3, 11, 8, 10)]),
    ("0 22-1 * * *", [u(2026, 3, 10, 22), u(2026, 3, 10, 23), u(2026, 3, 11, 0),
                      u(2026, 3, 11, 1), u(2026, 3, 11, 22)]),           # hour range wraps
    ("0 5-5 * * *", [u(2026, 3, 11, 5), u(2026, 3, 12, 5)]),             # not every hour
    ("15/30 * * * * *", [u(2026, 3, 10, 7, 0, 15), u(2026, 3, 10, 7, 0, 45),
                         u(2026, 3, 10, 7, 1, 15)]),
    ("0 */20 9 * * *", [u(2026, 3, 10, 9, 0), u(2026, 3, 10, 9, 20), u(2026, 3, 10, 9, 40),
                        u(2026, 3, 11, 9, 0)]),
    ("0 0 -1 * *", [u(2026, 3, 31), u(2026, 4, 30)]),                    # -1 == L
    ("0 0 last 2 *", [u(2027, 2, 28), u(2028, 2, 29)]),                  # leap years
    ("0 0 15,L * *", [u(2026, 3, 15), u(2026, 3, 31), u(2026, 4, 15), u(2026, 4, 30)]),
    ("0 0 29-L 2 *", [u(2028, 2, 29), u(2032, 2, 29)]),
    ("0 6 * * fri#L", [u(2026, 3, 27, 6), u(2026, 4, 24, 6)]),
    ("0 6 * * FRI#last", [u(2026, 3, 27, 6), u(2026, 4, 24, 6)]),
    ("0 6 * * 0#5", [u(2026, 3, 29, 6), u(2026, 5, 31, 6)]),             # 5th Sunday
    ("0 6 * * mon#1,mon#3", [u(2026, 3, 16, 6), u(2026, 4, 6, 6), u(2026, 4, 20, 6)]),
    # classic OR when both day fields are restricted: the 1st/15th plus every Friday
    ("0 4 1,15 * 5", [u(2026, 3, 13, 4), u(2026, 3, 15, 4), u(2026, 3, 20, 4),
                      u(2026, 3, 27, 4), u(2026, 4, 1, 4), u(2026, 4, 3, 4)]),
    # OR also holds with '#': the 1st OR the first Monday (croniter alone drops the 1st)
    ("0 0 1 * mon#1", [u(2026, 4, 1), u(2026, 4, 6), u(2026, 5, 1), u(2026, 5, 4)]),
    # '#' mixed with a plain weekday (croniter alone refuses this)
    ("0 9 * * tue#2,sun", [u(2026, 3, 10, 9), u(2026, 3, 15, 9), u(2026, 3, 22, 9),
                           u(2026, 3, 29, 9), u(2026, 4, 5, 9), u(2026, 4, 12, 9),
                           u(2026, 4, 14, 9)]),
    ("0 0 1-31 * mon", [u(2026, 3, 16), u(2026, 3, 23)]),   # dom covering every day: AND
    ("@daily", [u(2026, 3, 11), u(2026, 3, 12)]),
    ("@midnight", [u(2026, 3, 11)]),
    ("@noon", [u(2026, 3, 10, 12), u(2026, 3, 11, 12)]),
    ("@hourly UTC", [u(2026, 3, 10, 7), u(2026, 3, 10, 8)]),
    ("@weekly", [u(2026, 3, 15), u(2026, 3, 22)]),
    ("@monthly", [u(2026, 4, 1), u(2026, 5, 1)]),
    ("@yearly", [u(2027, 1, 1), u(2028, 1, 1)]),
    ("@annually", [u(2027, 1, 1)]),
    ("@daily Asia/Tokyo", [u(2026, 3, 10, 15), u(2026, 3, 11, 15)]),
    ("30 10 * * * -0530", [u(2026, 3, 10, 16), u(2026, 3, 11, 16)]),
    ("0 10 * * * +0900", [u(2026, 3, 11, 1), u(2026, 3, 12, 1)]),
    ("0 0 7 * * * America/Chicago", [u(2026, 3, 10, 12), u(2026, 3, 11, 12)]),  # CDT, -5
    ("0 7 * * *", [u(2026, 3, 10, 7), u(2026, 3, 11, 7)]),          # no zone means UTC
])
def test_dialect(expression, expected):
    assert fires(expression, len(expected)) == expected


# -- fugit 1.13's fire times, rule by rule (tests/support/fugit_oracle.rb printed them) --

FUGIT_ROWS = [
    # day of month OR day of week: only a field written '*' (or fugit's full 1-31) is free
    ('0 0 1 * 0-6', "2026-03-10 06:59:59", [u(2026, 3, 11), u(2026, 3, 12), u(2026, 3, 13)]),
    ('0 0 1-31 * mon', "2026-03-10 06:59:59", [u(2026, 3, 16), u(2026, 3, 23)]),
    ('0 0 1-15,16-31 * mon', "2026-03-10 06:59:59",
     [u(2026, 3, 11), u(2026, 3, 12), u(2026, 3, 13)]),
    ('0 0 1 * */1', "2026-03-10 06:59:59", [u(2026, 3, 11), u(2026, 3, 12)]),
    ('0 0 1 * sun-sat', "2026-03-10 06:59:59", [u(2026, 3, 11), u(2026, 3, 12)]),
    ('0 0 1 * 1-7', "2026-03-10 06:59:59", [u(2026, 3, 11), u(2026, 3, 12)]),
    ('0 0 1-31,5 * mon', "2026-03-10 06:59:59", [u(2026, 3, 16), u(2026, 3, 23)]),
    ('0 0 13 * mon', "2026-03-10 06:59:59", [u(2026, 3, 13), u(2026, 3, 16), u(2026, 3, 23)]),
    # negative days of the month, and ranges of them (fugit's own wrap for -1--5)
    ('0 0 -5 * *', "2026-01-20 00:00:00",
     [u(2026, 1, 27), u(2026, 2, 24), u(2026, 3, 27), u(2026, 4, 26)]),
    ('0 0 -5--1 * *', "2026-02-20 00:00:00", [u(2026, 2, 24), u(2026, 2, 25), u(2026, 2, 26), u(2026, 2, 27), u(2026, 2, 28), u(2026, 3, 27)]),
    ('0 0 -31 * *', "2026-01-20 00:00:00", [u(2026, 3, 1), u(2026, 5, 1), u(2026, 7, 1)]),
    ('0 0 -1--5 * *', "2026-02-20 00:00:00", [u(2026, 2, 21), u(2026, 2, 22), u(2026, 2, 23), u(2026, 2, 24), u(2026, 2, 28), u(2026, 3, 1)]),
    ('0 0 5-L 2 *', "2028-02-26 00:00:00",
     [u(2028, 2, 27), u(2028, 2, 28), u(2028, 2, 29), u(2029, 2, 5), u(2029, 2, 6)]),
    # #-1 .. #-5: the n-th weekday from the month's end
    ('0 0 * * fri#-2', "2026-03-10 06:59:59", [u(2026, 3, 20), u(2026, 4, 17), u(2026, 5, 22)]),
    ('0 0 * * mon#-5', "2026-03-10 06:59:59", [u(2026, 6, 1), u(2026, 8, 3), u(2026, 11, 2)]),
    ('0 0 * * sun#5,sun#-5', "2026-01-01 00:00:00",
     [u(2026, 3, 1), u(2026, 3, 29), u(2026, 5, 3)]),
    # a bare step; 'a/n' in day of week is 'a' alone (fugit: z ||= a); '/0' steps by 1
    ('/15 * * * *', "2026-03-10 06:59:59",
     [u(2026, 3, 10, 7), u(2026, 3, 10, 7, 15), u(2026, 3, 10, 7, 30)]),
    ('0 0 * * 1/2', "2026-03-10 06:59:59", [u(2026, 3, 16), u(2026, 3, 23), u(2026, 3, 30)]),
    ('0 0 * * 5/3', "2026-03-10 06:59:59", [u(2026, 3, 13), u(2026, 3, 20), u(2026, 3, 27)]),
    ('0 0 13 * /0', "2026-03-10 06:59:59", [u(2026, 3, 11), u(2026, 3, 12), u(2026, 3, 13)]),
    ('0 0 * * 7/2', "2026-03-10 06:59:59", [u(2026, 3, 15), u(2026, 3, 22)]),
    # hour 24 is 0; steps past the top of the field
    ('0 24 * * *', "2026-03-10 06:59:59", [u(2026, 3, 11), u(2026, 3, 12)]),
    ('0 20-24/2 * * *', "2026-03-10 06:59:59",
     [u(2026, 3, 10, 20), u(2026, 3, 10, 22), u(2026, 3, 11), u(2026, 3, 11, 20)]),
    ('0 */27 * * *', "2026-03-10 06:59:59", [u(2026, 3, 11), u(2026, 3, 12)]),
    # '&': day of month AND day of week
    ('0 0 13 * fri&', "2026-01-01 00:00:00", [u(2026, 2, 13), u(2026, 3, 13), u(2026, 11, 13)]),
    ('0 0 1-7& * mon', "2026-03-10 06:59:59", [u(2026, 4, 6), u(2026, 5, 4), u(2026, 6, 1)]),
    # '%': weeks since fugit 1.13's reference Monday 2018-12-31, counted from noon to noon in
    # the schedule's zone: in Berlin's summer that count is one lower, so the weeks flip
    ('0 0 * * sun%2', "2026-03-10 06:59:59", [u(2026, 3, 22), u(2026, 4, 5), u(2026, 4, 19)]),
    ('0 0 * * tue%3+2', "2026-03-10 06:59:59", [u(2026, 3, 24), u(2026, 4, 14), u(2026, 5, 5)]),
    ('0 12 * * mon%2 Europe/Berlin', "2026-03-20 00:00:00",
     [u(2026, 4, 6, 10), u(2026, 4, 20, 10), u(2026, 5, 4, 10), u(2026, 5, 18, 10)]),
    ('0 12 * * mon%2 UTC', "2026-03-20 00:00:00",
     [u(2026, 3, 30, 12), u(2026, 4, 13, 12), u(2026, 4, 27, 12), u(2026, 5, 11, 12)]),
    # a list of 30 days plus L stays a list (croniter read it as '*' and fired on the 1st);
    # fugit drops (month, day) pairs that never exist: no February Mondays below;
    # '*' in a weekday list adds nothing
    ('0 0 2-31,L * *', "2026-03-29 00:00:00", [u(2026, 3, 30), u(2026, 3, 31), u(2026, 4, 2)]),
    ('0 0 31 2,3 mon', "2026-02-01 00:00:00", [u(2026, 3, 2), u(2026, 3, 9), u(2026, 3, 16)]),
    ('0 0 * * *,mon', "2026-03-10 06:59:59", [u(2026, 3, 16), u(2026, 3, 23)]),
    # month ends in leap and common years
    ('0 0 L 2 *', "2027-01-01 00:00:00", [u(2027, 2, 28), u(2028, 2, 29)]),
    ('0 0 29 2 *', "2026-01-01 00:00:00", [u(2028, 2, 29), u(2032, 2, 29)]),
    ('0 0 -1 * *', "2028-01-15 00:00:00", [u(2028, 1, 31), u(2028, 2, 29), u(2028, 3, 31)]),
    ('0 0 29-L 2 *', "2026-01-01 00:00:00", [u(2028, 2, 29), u(2032, 2, 29)]),
    # empty list items are ignored
    ('1,,2 * * * *', "2026-03-10 06:59:59", [u(2026, 3, 10, 7, 1), u(2026, 3, 10, 7, 2)]),
    # DST days where our rules and fugit's agree: every real hour, and times away from
    # the change
    ('0 * * * * Europe/Berlin', "2026-03-29 00:30:00",
     [u(2026, 3, 29, 1), u(2026, 3, 29, 2), u(2026, 3, 29, 3)]),
    ('0 * * * * Europe/Berlin', "2026-10-24 23:30:00",
     [u(2026, 10, 25), u(2026, 10, 25, 1), u(2026, 10, 25, 2), u(2026, 10, 25, 3)]),
    ('0 4 * * * Europe/Berlin', "2026-03-28 12:00:00", [u(2026, 3, 29, 2), u(2026, 3, 30, 2)]),
    ('0 * * * * America/New_York', "2026-11-01 04:30:00",
     [u(2026, 11, 1, 5), u(2026, 11, 1, 6), u(2026, 11, 1, 7), u(2026, 11, 1, 8)]),
    ('0 9 * * * America/New_York', "2026-11-01 00:00:00",
     [u(2026, 11, 1, 14), u(2026, 11, 2, 14)]),
    ('0 * * * * Australia/Lord_Howe', "2026-04-04 14:00:00",
     [u(2026, 4, 4, 15, 30), u(2026, 4, 4, 16, 30), u(2026, 4, 4, 17, 30), u(2026, 4, 4, 18, 30)]),
    ('0 8 * * * Australia/Lord_Howe', "2026-04-04 00:00:00",
     [u(2026, 4, 4, 21, 30), u(2026, 4, 5, 21, 30)]),
]



@pytest.mark.parametrize("expression, start, expected", FUGIT_ROWS,
                         ids=[f"{r[0]}@{r[1]}" for r in FUGIT_ROWS])
def test_fugit_fire_times(expression, start, expected):
    after = datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert fires(expression, len(expected), after) == expected



@pytest.mark.parametrize("expression, start, expected", FUGIT_ROWS,
                         ids=[f"{r[0]}@{r[1]}" for r in FUGIT_ROWS])
def test_fugit_fire_times_walking_backwards(expression, start, expected):
    # previous_fire (missed-fire detection) must see the same fires as next_fire
    schedule = CronSchedule.parse(expression)
    for earlier, later in zip(expected, expected[1:]):
        assert schedule.previous_fire(later) == later
        assert schedule.previous_fire(later - timedelta(seconds=1)) == earlier

# Deliberate departures on DST days (README): a wall time in the spring-forward gap fires
# once at the end of the gap, where fugit skips that day; one repeated by fall-back fires
# once, at its first pass, where fugit also fires at the second; days are calendar days.
DST_DEPARTURES = [
    # expression, start, fugit's fires, ours
    ("30 2 * * * Europe/Berlin", "2026-03-28 12:00:00",
     [u(2026, 3, 30, 0, 30), u(2026, 3, 31, 0, 30)], [u(2026, 3, 29, 1), u(2026, 3, 30, 0, 30)]),
    ("30 2 * * * Europe/Berlin", "2026-10-24 12:00:00",
     [u(2026, 10, 25, 0, 30), u(2026, 10, 25, 1, 30)],
     [u(2026, 10, 25, 0, 30), u(2026, 10, 26, 1, 30)]),
    ("30 2 * * * America/New_York", "2026-03-07 12:00:00",
     [u(2026, 3, 9, 6, 30), u(2026, 3, 10, 6, 30)], [u(2026, 3, 8, 7), u(2026, 3, 9, 6, 30)]),
    ("30 1 * * * America/New_York", "2026-10-31 12:00:00",
     [u(2026, 11, 1, 5, 30), u(2026, 11, 1, 6, 30)],
     [u(2026, 11, 1, 5, 30), u(2026, 11, 2, 6, 30)]),
    # Lord Howe moves its clocks by half an hour: 02:00 -> 02:30 and 02:00 -> 01:30
    ("15 2 * * * Australia/Lord_Howe", "2026-10-03 00:00:00",
     [u(2026, 10, 4, 15, 15), u(2026, 10, 5, 15, 15)],
     [u(2026, 10, 3, 15, 30), u(2026, 10, 4, 15, 15)]),
    ("45 1 * * * Australia/Lord_Howe", "2026-04-04 00:00:00",
     [u(2026, 4, 4, 14, 45), u(2026, 4, 4, 15, 15)],
     [u(2026, 4, 4, 14, 45), u(2026, 4, 5, 15, 15)]),
    # fugit steps a day as 24 real hours: on a 23-hour March 31 (Berlin, 2024) its "last
    # day" is the 30th; after Lord Howe's 23.5-hour Sunday it skips Monday's midnight
    ("0 0 L * * Europe/Berlin", "2024-03-15 00:00:00",
     [u(2024, 3, 29, 23), u(2024, 4, 29, 22)], [u(2024, 3, 30, 23), u(2024, 4, 29, 22)]),
    ("0 0 * * mon Australia/Lord_Howe", "2026-10-03 08:19:59",
     [u(2026, 10, 11, 13)], [u(2026, 10, 4, 13)]),
]


@pytest.mark.parametrize("expression, start, fugit, expected", DST_DEPARTURES,
                         ids=[f"{r[0]}@{r[1]}" for r in DST_DEPARTURES])
def test_dst_departures_from_fugit(expression, start, fugit, expected):
    after = datetime.fromisoformat(start).replace(tzinfo=UTC)
    got = fires(expression, len(expected), after)
    assert got == expected
    assert got != fugit  # the row documents a real departure, not an agreement


@pytest.mark.parametrize("expression", ["0 0 1 * mon#2&", "0 0 8-14& * mon#1"])
def test_days_that_never_come_are_refused(expression):
    # fugit accepts these and then fails at its first evaluation ("too many loops")
    with pytest.raises(CronError, match="never occur") as exc:
        CronSchedule.parse(expression)
    assert exc.value.field == "day of month"


@pytest.mark.parametrize("expression, tz", [
    ("0 7 * * *", UTC),
    ("0 7 * * * UTC", ZoneInfo("UTC")),
    ("0 0 7 * * * Europe/Berlin", ZoneInfo("Europe/Berlin")),
    ("@daily America/Chicago", ZoneInfo("America/Chicago")),
    ("0 7 * * * +09:00", timezone(timedelta(hours=9))),
    ("0 7 * * * +0900", timezone(timedelta(hours=9))),
    ("0 7 * * * -0530", timezone(-timedelta(hours=5, minutes=30))),
])
def test_time_zone_is_parsed(expression, tz):
    schedule = CronSchedule.parse(expression)
    assert schedule.tz == tz
    assert schedule.expression == expression


def test_results_are_aware_utc_even_for_other_zones():
    after = datetime(2026, 3, 10, 7, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # = 22:00 UTC on 9th
    got = CronSchedule.parse("0 0 * * * Europe/Berlin").next_fire(after)
    assert got == u(2026, 3, 9, 23) and got.tzinfo is UTC


def test_naive_datetimes_are_refused():
    schedule = CronSchedule.parse("@daily")
    for call in (lambda: schedule.next_fire(datetime(2026, 1, 1)),
                 lambda: schedule.previous_fire(datetime(2026, 1, 1)),
                 lambda: schedule.fires_between(datetime(2026, 1, 1), datetime(2026, 1, 2))):
        with pytest.raises(ValueError, match="timezone-aware"):
            call()


# -- rejections ------------------------------------------------------------------------

@pytest.mark.parametrize("expression, field, token, fragment", [
    ("0 0 7 ? * * UTC", "day of month", "?", "Quartz"),
    ("0 0 * * ?", "day of week", "?", "Quartz"),
    ("0 0 15W * *", "day of month", "15W", "Quartz nearest-weekday"),
    ("0 0 LW * *", "day of month", "LW", "Quartz nearest-weekday"),
    ("61 * * * * *", "second", "61", "out of range (0-59)"),
    ("0 60 * * * *", "minute", "60", "out of range (0-59)"),
    ("0 25 * * *", "hour", "25", "out of range (0-24)"),
    ("* * 32 * *", "day of month", "32", "out of range (1-31, or -1 to -31"),
    ("* * -32 * *", "day of month", "-32", "out of range (1-31, or -1 to -31"),
    ("* * 0 * *", "day of month", "0", "out of range (1-31, or -1 to -31"),
    ("* * * 13 *", "month", "13", "out of range (1-12)"),
    ("* * * * 8", "day of week", "8", "out of range (0-7)"),
    ("* * * foo *", "month", "foo", "is not valid"),
    ("* * * * Mon-Funday", "day of week", "Mon-Funday", "is not valid"),
    ("H * * * *", "minute", "H", "is not valid"),          # croniter hash syntax
    (", * * * *", "minute", ",", "is not valid"),
    ("*-5 * * * *", "minute", "*-5", "is not valid"),
    ("*/0 * * * *", "minute", "*/0", "step outside 1-99"),
    ("0 0 -2-5 * *", "day of month", "-2-5", "all positive or all counted from"),
    ("0 0 L/2 * *", "day of month", "L/2", "is not valid"),
    ("0 0 * * fri#-6", "day of week", "fri#-6", "is not valid"),
    ("0 0 * * fri#6", "day of week", "fri#6", "is not valid"),
    ("0 0 * * mon-fri#1", "day of week", "mon-fri#1", "is not valid"),
    ("0 0 1#1 * *", "day of month", "1#1", "only allowed in day of week"),
    ("0 0 * * 1%0", "day of week", "1%0", "modulo of 0"),
    ("0 0 1%2 * *", "day of month", "1%2", "only allowed in day of week"),
    ("0 0 * * 1%2+", "day of week", "1%2+", "is not valid"),
    ("0 0 * * * +05:20", "time zone", "+05:20", "00, 15, 30 or 45"),
    ("0 0 * * * posix/Europe/Berlin", "time zone", "posix/Europe/Berlin", "unknown"),
    ("0 0 * * * Europe/Berlinx", "time zone", "Europe/Berlinx", "unknown time zone"),
    ("0 0 * * 1~5", "day of week", "~", "random"),
    ("0 0 1 * &mon", "day of week", "&", "AND"),
    ("0 0 30 2 *", "day of month", "30", "never occurs"),
    ("0 0 31 4,6 *", "day of month", "31", "never occurs"),
    ("0 0 * * * Mars/Olympus", "time zone", "Mars/Olympus", "unknown time zone"),
    ("@daily Mars/Olympus", "time zone", "Mars/Olympus", "unknown time zone"),
    ("0 0 * * * Europe", "time zone", "Europe", "unknown time zone"),
    ("0 0 * * * +25:00", "time zone", "+25:00", "out of range"),
])
def test_rejections_name_field_and_token(expression, field, token, fragment):
    with pytest.raises(CronError) as exc:
        CronSchedule.parse(expression)
    message = str(exc.value)
    assert message.startswith(f"invalid cron schedule {expression!r}: ")
    assert (exc.value.field, exc.value.token) == (field, token)
    assert (repr(token) in message and repr(field) in message) or field == "time zone"
    assert token in message and fragment in message


@pytest.mark.parametrize("expression, found", [
    ("* * * *", 4),
    ("* * * * UTC", 4),
    ("0 0 0 7 * * * UTC", 7),
    ("* * * * * * * *", 8),
    ("", 0),
])
def test_wrong_field_count(expression, found):
    with pytest.raises(CronError, match=rf"found {found} fields, expected 5 .* or 6 "):
        CronSchedule.parse(expression)


@pytest.mark.parametrize("expression", ["@reboot", "@daily UTC extra", "@fortnightly"])
def test_bad_shortcuts(expression):
    with pytest.raises(CronError, match="shortcut"):
        CronSchedule.parse(expression)


def test_validate_and_error_type():
    assert validate("*/5 * * * * Europe/Berlin") is None
    with pytest.raises(ValueError):  # CronError is a ValueError for callers that don't care
        validate("* * 32 * *")


# -- previous_fire and fires_between ---------------------------------------------------

@pytest.mark.parametrize("expression, at, expected", [
    ("0 0 7 * * * UTC", START, u(2026, 3, 9, 7)),
    ("0 0 7 * * * UTC", u(2026, 3, 10, 7), u(2026, 3, 10, 7)),                  # inclusive
    ("0 0 7 * * * UTC", u(2026, 3, 10, 7, 0, 0) + timedelta(microseconds=5), u(2026, 3, 10, 7)),
    ("0 0 7 * * * UTC", u(2026, 3, 10, 7) - timedelta(microseconds=1), u(2026, 3, 9, 7)),
    ("*/10 * * * * *", u(2026, 3, 10, 7, 0, 9), u(2026, 3, 10, 7, 0, 0)),
    ("0 0 L * *", START, u(2026, 2, 28)),
    ("0 7 * * fri#-1", START, u(2026, 2, 27, 7)),
    ("0 0 1 * mon#1", START, u(2026, 3, 2)),                      # first Monday of March
    ("0 0 1 * mon#1", u(2026, 3, 1, 12), u(2026, 3, 1)),          # ... or the 1st
    ("0 0 12 1 * * +09:00", START, u(2026, 3, 1, 3)),
])
def test_previous_fire(expression, at, expected):
    got = CronSchedule.parse(expression).previous_fire(at)
    assert got == expected and got.tzinfo is UTC


def test_fires_between_is_exclusive_inclusive_and_limited():
    s = CronSchedule.parse("0 * * * *")
    assert s.fires_between(u(2026, 3, 10, 7), u(2026, 3, 10, 10)) == [
        u(2026, 3, 10, 8), u(2026, 3, 10, 9), u(2026, 3, 10, 10)]
    assert s.fires_between(u(2026, 3, 10, 7), u(2026, 3, 10, 7, 59)) == []
    assert s.fires_between(u(2026, 3, 10), u(2026, 3, 11), limit=2) == [
        u(2026, 3, 10, 1), u(2026, 3, 10, 2)]
    assert len(s.fires_between(u(2026, 1, 1), u(2026, 3, 1))) == 1000  # default limit


def test_or_alternatives_firing_on_the_same_day_fire_once():
    # 2026-06-01 is both the 1st and the first Monday
    got = CronSchedule.parse("0 0 1 * mon#1").fires_between(u(2026, 5, 20), u(2026, 6, 30))
    assert got == [u(2026, 6, 1)]


# -- daylight saving time --------------------------------------------------------------

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


@pytest.mark.parametrize("expression, day, expected", [
    # spring forward 02:00 -> 03:00 CEST: 02:30 does not exist; fires once, after the gap
    ("0 30 2 * * * Europe/Berlin", (2026, 3, 29), [u(2026, 3, 29, 1, 0)]),
    # fall back 03:00 -> 02:00 CET: 02:30 happens twice; fires once, on the first one
    ("0 30 2 * * * Europe/Berlin", (2026, 10, 25), [u(2026, 10, 25, 0, 30)]),
    ("30 2 * * * America/New_York", (2026, 3, 8), [u(2026, 3, 8, 7, 0)]),    # 03:00 EDT
    ("30 1 * * * America/New_York", (2026, 11, 1), [u(2026, 11, 1, 5, 30)]),  # 01:30 EDT
    ("*/15 2 * * * Europe/Berlin", (2026, 3, 29), [u(2026, 3, 29, 1, 0)]),   # gap collapses
    ("30 2,3 * * * Europe/Berlin", (2026, 3, 29), [u(2026, 3, 29, 1, 0), u(2026, 3, 29, 1, 30)]),
])
def test_dst_wall_clock_schedules_fire_once(expression, day, expected):
    s = CronSchedule.parse(expression)
    midnight = datetime(*day, tzinfo=s.tz)
    next_midnight = (datetime(*day) + timedelta(days=1)).replace(tzinfo=s.tz)
    start = midnight.astimezone(UTC) - timedelta(seconds=1)
    end = next_midnight.astimezone(UTC) - timedelta(seconds=1)
    assert s.fires_between(start, end) == expected  # the whole local day
    # the neighbouring days keep their normal single fire
    assert s.previous_fire(start).astimezone(s.tz).date() == (midnight - timedelta(days=1)).date()
    assert s.next_fire(end).astimezone(s.tz).date() == next_midnight.date()


@pytest.mark.parametrize("tz, transition_utc, local_day, local_day_fires", [
    (BERLIN, u(2026, 3, 29, 1), (2026, 3, 29), 23),
    (BERLIN, u(2026, 10, 25, 1), (2026, 10, 25), 25),
    (NEW_YORK, u(2026, 3, 8, 7), (2026, 3, 8), 23),
    (NEW_YORK, u(2026, 11, 1, 6), (2026, 11, 1), 25),
])
def test_dst_hourly_runs_every_real_hour(tz, transition_utc, local_day, local_day_fires):
    s = CronSchedule.parse(f"0 * * * * {tz.key}")
    window = s.fires_between(transition_utc - timedelta(hours=12, minutes=30),
                             transition_utc + timedelta(hours=11, minutes=30))
    assert len(window) == 24
    assert all(b - a == timedelta(hours=1) for a, b in zip(window, window[1:]))
    # a 23- or 25-hour local day gets 23 or 25 runs: no doubled and no lost hour
    midnight = datetime(*local_day, tzinfo=tz)
    next_midnight = (midnight + timedelta(days=1)).replace(tzinfo=tz)
    day = s.fires_between(midnight.astimezone(UTC) - timedelta(seconds=1),
                          next_midnight.astimezone(UTC) - timedelta(seconds=1))
    assert len(day) == local_day_fires


def _oracle(tz, hourly, match, start, end):
    """Brute force of the documented DST rules, minute by minute in UTC (no croniter)."""
    out, t = [], start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= end:
        local = t.astimezone(tz)
        wall = local.replace(tzinfo=None)
        prev_wall = (t - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
        repeated = local.astimezone(UTC) != local.replace(fold=0).astimezone(UTC)
        skipped, w = [], prev_wall + timedelta(minutes=1)
        while w < wall:  # wall minutes jumped over by spring-forward
            skipped.append(w)
            w += timedelta(minutes=1)
        if hourly:
            hit = match(wall)
        else:
            hit = (match(wall) and not repeated) or any(match(w) for w in skipped)
        if hit:
            out.append(t)
        t += timedelta(minutes=1)
    return out


DST_CASES = [
    ("0 * * * *", True, lambda w: w.minute == 0),
    ("30 * * * *", True, lambda w: w.minute == 30),
    ("*/20 * * * *", True, lambda w: w.minute % 20 == 0),
    ("30 2 * * *", False, lambda w: (w.hour, w.minute) == (2, 30)),
    ("30 1 * * *", False, lambda w: (w.hour, w.minute) == (1, 30)),
    ("0 1-3 * * *", False, lambda w: w.minute == 0 and 1 <= w.hour <= 3),
    ("*/20 1,2 * * *", False, lambda w: w.minute % 20 == 0 and w.hour in (1, 2)),
    ("45 0-23/2 * * *", False, lambda w: w.minute == 45 and w.hour % 2 == 0),
]
TRANSITIONS = [(BERLIN, u(2026, 3, 29, 1)), (BERLIN, u(2026, 10, 25, 1)),
               (NEW_YORK, u(2026, 3, 8, 7)), (NEW_YORK, u(2026, 11, 1, 6))]


@pytest.mark.parametrize("expression, hourly, match", DST_CASES, ids=[c[0] for c in DST_CASES])
@pytest.mark.parametrize("tz, transition", TRANSITIONS,
                         ids=[f"{tz.key}-{t:%m-%d}" for tz, t in TRANSITIONS])
def test_dst_matches_brute_force_from_any_starting_point(expression, hourly, match, tz,
                                                         transition):
    s = CronSchedule.parse(f"{expression} {tz.key}")
    lo, hi = transition - timedelta(hours=8), transition + timedelta(hours=8)
    expected = _oracle(tz, hourly, match, lo - timedelta(days=1), hi + timedelta(days=1))
    assert s.fires_between(lo, hi) == [t for t in expected if lo < t <= hi]
    # starting points on, just before and between fires, including inside a repeated hour
    points = [lo + timedelta(minutes=10 * i) for i in range(96)]
    points += [f + d for f in expected if lo < f < hi
               for d in (timedelta(0), timedelta(seconds=-1))]
    for p in points:
        assert s.next_fire(p) == min(t for t in expected if t > p), p
        assert s.previous_fire(p) == max(t for t in expected if t <= p), p


def test_dst_spring_forward_gap_is_not_reported_as_a_missing_fire_twice():
    # previous_fire right after the gap returns the shifted fire, not the day before
    s = CronSchedule.parse("0 30 2 * * * Europe/Berlin")
    assert s.previous_fire(u(2026, 3, 29, 1, 0, 30)) == u(2026, 3, 29, 1, 0)
    assert s.next_fire(u(2026, 3, 29, 1, 0)) == u(2026, 3, 30, 0, 30)
