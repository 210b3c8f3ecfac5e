"""Differential test: snapledger's cron against fugit 1.13 itself, the parser BOSH runs.

A seeded generator writes schedules from the pieces of fugit's grammar (and some
it refuses), with start times over leap and common years; one Ruby process
answers all of them with fugit 1.13.0 (tests/support/fugit_oracle.rb), and every
case must agree -- same refusal, or the same next fire times -- unless it falls
under a departure the README documents (DST handling; what we accept that fugit
refuses harmlessly). Skips without Ruby/fugit unless SNAPLEDGER_REQUIRE_FUGIT=1.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from datetime import datetime, timedelta, UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from snapledger.domain.cron import CronError, CronSchedule

UTC = UTC
ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / "tests" / "support" / "fugit_oracle.rb"
FIRES = 3
# Seeded and reproducible; $SNAPLEDGER_FUGIT_SEED explores other generated sets.
SEED = int(os.environ.get("SNAPLEDGER_FUGIT_SEED", "20"))
# fugit in Ruby takes ~20 ms a case; $SNAPLEDGER_FUGIT_CASES runs a deeper comparison.
CASES = int(os.environ.get("SNAPLEDGER_FUGIT_CASES", "500"))


def _fugit_dir() -> Path | None:
    for candidate in (os.environ.get("SNAPLEDGER_FUGIT_DIR"),
                      ROOT.parent / "shared" / "reference" / "fugit-1.13.0"):
        if candidate and (Path(candidate) / "fugit" / "lib" / "fugit.rb").is_file():
            return Path(candidate)
    return None


def _require_fugit() -> Path:
    fugit, ruby = _fugit_dir(), shutil.which("ruby")
    why = ("fugit 1.13 sources not found (../shared/reference/fugit-1.13.0 or "
           "$SNAPLEDGER_FUGIT_DIR)" if fugit is None else "ruby is not installed")
    if fugit is None or ruby is None:
        if os.environ.get("SNAPLEDGER_REQUIRE_FUGIT") == "1":
            pytest.fail(f"SNAPLEDGER_REQUIRE_FUGIT=1 but {why}")
        pytest.skip(why)
    return fugit


def ask_fugit(questions: list[dict]) -> list[dict]:
    """All questions in one Ruby process: {"cron", "start", "n"} -> {"fires"} or {"error"}."""
    fugit = _require_fugit()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC", "LANG": "C.UTF-8",
           "RUBYLIB": f"{fugit / 'fugit' / 'lib'}:{fugit / 'et-orbi' / 'lib'}"}
    stdin = "".join(json.dumps(q) + "\n" for q in questions)
    done = subprocess.run(["ruby", str(ORACLE)], input=stdin, capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"fugit oracle failed ({done.returncode}): {done.stderr[-2000:]}")
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    if os.environ.get("SNAPLEDGER_REQUIRE_FUGIT") == "1" or answers:
        # A Ruby without the libraries fugit needs (raabro, tzinfo) refuses every case.
        if all("LoadError" in a.get("error", "") for a in answers):
            pytest.fail(f"fugit could not load: {answers[0]}")
    assert len(answers) == len(questions)
    return answers


# -- the generator --------------------------------------------------------------------

# Each field: pieces fugit accepts, and (drawn less often) pieces it refuses.
FIELDS = {
    "second": (["0", "*", "*/15", "30", "0,30", "10-20/5", "/20", "45/10", "59", ",5,,6,"],
               ["60", "*/0", "1-", "5/100"]),
    "minute": (["0", "*", "*/5", "/7", "15", "0,30", "5-10", "50-10", "10-40/15", "7/20",
                "59", "0-59", "3-3"], ["60", "*-5", "*/0", "H", "007"]),
    "hour": (["*", "0", "2", "24", "22-2", "*/6", "/5", "0-23", "9-17", "1,13", "23-24",
              "20-24/2", "*/27", "24-2", "3", "1-3", "0-24"], ["25", "-1", "2-"]),
    "day of month": (["*", "1", "15", "L", "last", "-1", "-5", "-5--1", "-3--1/2", "1-31",
                      "1-15,16-31", "29-L", "5-L", "*/1", "/10", "10/5", "2-31,L", "1-7",
                      "30,31", "13", "-1--5", "31", "29", "1-L", "-31", "-7--3", "1,L",
                      "28-31"], ["L/2", "-2-5", "32", "0", "15W", "?", "1#1"]),
    "month": (["*", "*", "*", "*", "1", "2", "feb", "jan-mar", "nov-feb", "*/3", "2,3",
               "4,6,9,11", "1-12", "/4", "DEC"], ["13", "0", "foo"]),
    "day of week": (["*", "*", "mon", "0-6", "sun-sat", "*/1", "1/2", "5/3", "/2", "/0",
                     "mon-fri", "fri-mon", "7", "0", "mon#1", "fri#-1", "fri#L", "sun#-2",
                     "tue#3", "mon#5", "sun%2", "tue%3+2", "mon%2+1", "*,mon", "1-7", "6-0",
                     "sat,sun", "thu#-5", "wed#last", "sat%4+3", "SUN", "1,3,5", "7/2"],
                    ["mon#6", "mon-fri#1", "8", "mon%0", "1~5", "&mon", "01"]),
}
ZONES = (["", "", "", "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
          "Asia/Kolkata", "+05:30", "-0800", "+09:00", "-11:45"],
         ["Europe/Berlinx", "GMT+5", "Mars/Base", "+12:00", "+05:20", "utc"])
SHORTCUTS = ["@daily", "@weekly", "@monthly", "@yearly", "@hourly", "@noon", "@midnight",
             "@annually", "@reboot", "@DAILY"]


def _pick(rng: random.Random, pieces: tuple[list[str], list[str]]) -> str:
    valid, invalid = pieces
    return rng.choice(invalid if rng.random() < 0.03 else valid)


def generate(rng: random.Random) -> str:
    zone = _pick(rng, ZONES)
    if rng.random() < 0.05:
        return f"{rng.choice(SHORTCUTS)} {zone}".strip()
    fields = [_pick(rng, FIELDS[f]) for f in ("minute", "hour", "day of month", "month",
                                              "day of week")]
    if rng.random() < 0.1:  # fugit's day-AND marker, on either day field
        fields[rng.choice([2, 4])] += "&"
    if rng.random() < 0.4:
        fields.insert(0, _pick(rng, FIELDS["second"]))
    return " ".join(fields + ([zone] if zone else []))


DST_ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")


def _transitions(zone: str) -> list[datetime]:
    """The zone's offset changes in 2024-2028, to the half hour (ours and fugit's are)."""
    tz, out = ZoneInfo(zone), []
    day = datetime(2024, 1, 1, tzinfo=UTC)
    while day.year < 2029:
        nxt = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            t = day
            while t.astimezone(tz).utcoffset() == day.astimezone(tz).utcoffset():
                t += timedelta(minutes=30)
            out.append(t)
        day = nxt
    return out


TRANSITIONS = {zone: _transitions(zone) for zone in DST_ZONES}


def start_time(rng: random.Random, expression: str) -> datetime:
    zone = expression.split()[-1]
    if zone in TRANSITIONS and rng.random() < 0.5:  # the day before a DST change
        t = rng.choice(TRANSITIONS[zone]) - timedelta(minutes=rng.randrange(30 * 60))
    elif rng.random() < 0.3:  # the ends of months, leap Februaries among them
        year, month = rng.choice([2024, 2025, 2027, 2028]), rng.randint(1, 12)
        t = datetime(year, month, 1, tzinfo=UTC) - timedelta(hours=rng.randint(0, 72))
    else:
        t = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(5 * 365 * 86400))
    return t.replace(second=rng.choice([0, 0, 59, rng.randint(0, 59)]))


# -- the documented departures (README, "Scheduled snapshots") ------------------------

def _dst_departure(expression: str, mine: list[str], theirs: list[str]) -> bool:
    """Our DST handling is deliberate (README): a wall time in a gap fires at its end, a
    repeated one once, and days are calendar days, where fugit's cursor steps 24 real
    hours (so it reads `L` as the 30th when clocks go forward on March 31, and skips
    the midnight after Lord Howe's 23.5-hour day). A difference is that departure only
    if, up to the earlier of both last fires, every fire one side has and the other
    lacks falls on the local day of a change or the day before or after it."""
    zone = expression.split()[-1]
    if zone not in TRANSITIONS:
        return False
    tz = ZoneInfo(zone)
    horizon = min(mine[-1], theirs[-1])
    differ = {t for t in mine if t <= horizon} ^ {t for t in theirs if t <= horizon}
    change_days = [c.astimezone(tz).date() for c in TRANSITIONS[zone]]
    return bool(differ) and all(
        any(abs(datetime.fromisoformat(t).astimezone(tz).date() - d) <= timedelta(days=1)
            for d in change_days)
        for t in differ)


def _accepted_on_purpose(expression: str) -> bool:
    """What fugit refuses and we accept because it is harmless: offsets of 12 h and more,
    upper-case shortcuts, leading zeros (a minute "007", a weekday "01")."""
    tokens = expression.split()
    zone = tokens[-1]
    return ((zone[:1] in "+-" and len(zone) >= 5 and int(zone[1:3]) >= 12)
            or (tokens[0][:1] == "@" and tokens[0] != tokens[0].lower())
            or any(re.fullmatch(r"0\d\d+|01&?", t) for t in tokens))


def _refused_on_purpose(expression: str) -> bool:
    """What fugit accepts and we refuse: zone names it repairs by dropping trailing
    characters, '~' (random values), and '%0' (fugit divides by zero on the weekday)."""
    day_items = [i for f in expression.split()[2:] for i in f.split(",")]
    return (expression.split()[-1] in ("Europe/Berlinx", "GMT+5") or "~" in expression
            or any(re.fullmatch(r"[a-z0-7]+%0+(\+\d+)?&?", i) for i in day_items))


def ours(expression: str, start: datetime) -> dict:
    try:
        schedule = CronSchedule.parse(expression)
    except CronError as error:
        return {"error": str(error)}
    return {"fires": [t.strftime("%Y-%m-%dT%H:%M:%SZ")
                      for t in schedule.next_fires(start, FIRES)]}


@pytest.mark.timeout(max(600, CASES // 2))  # ~10 s quiet; Ruby is slow on a busy box
def test_agrees_with_fugit_on_generated_schedules():
    rng = random.Random(SEED)
    expressions = [generate(rng) for _ in range(CASES)]
    cases = [(e, start_time(rng, e)) for e in expressions]
    answers = ask_fugit([{"cron": c, "start": s.strftime("%Y-%m-%d %H:%M:%S UTC"), "n": FIRES}
                         for c, s in cases])
    disagreements, counts = [], {"same fires": 0, "both refuse": 0, "dst": 0, "documented": 0}
    for (expression, start), theirs in zip(cases, answers):
        mine = ours(expression, start)
        if "error" in mine and "error" in theirs:
            counts["both refuse"] += 1
        elif mine.get("fires") == theirs.get("fires"):
            counts["same fires"] += 1
        elif "fires" in mine and "fires" in theirs and _dst_departure(
                expression, mine["fires"], theirs["fires"]):
            counts["dst"] += 1
        elif ("fires" in mine and _accepted_on_purpose(expression)) or (
                "error" in mine and _refused_on_purpose(expression)):
            counts["documented"] += 1
        else:
            disagreements.append(f"{expression!r} after {start:%Y-%m-%d %H:%M:%S}: "
                                 f"fugit {theirs} / snapledger {mine}")
    print(counts)
    assert not disagreements, f"{len(disagreements)} of {CASES} differ:\n" + "\n".join(
        disagreements[:40])
    # The generated set exercises both sides: schedules that fire and ones refused.
    assert counts["same fires"] > CASES // 2 and counts["both refuse"] > CASES // 20
