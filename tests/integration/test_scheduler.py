"""The scheduler on the real event stores with a controlled clock."""

from __future__ import annotations

from datetime import datetime, timedelta, UTC
from typing import Any

import pytest
import structlog

from snapledger.adapters.store import ledger_env, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.cron import CronError
from snapledger.scheduler.process import Scheduler

UTC = UTC
LOG = structlog.get_logger("test")
EVERY_MINUTE = "0 * * * * * UTC"


@pytest.fixture
def ledger(store_url: str) -> Any:
    new_ledger = Ledger(env=ledger_env(parse_store_url(store_url)))
    new_ledger.deployments.record("a", {}, [{"job": "db", "index": 0, "disks": ["da"]}], actor="op")
    new_ledger.deployments.record("b", {}, [{"job": "db", "index": 0, "disks": ["db0", "db1"]}], actor="op")
    new_ledger.settings.set_schedule("self_snapshot_schedule", None, actor="op")
    yield new_ledger
    new_ledger.close()


def fires(ledger: Ledger) -> list[Any]:
    events = [ledger.store.mapper.to_domain_event(n) for n in ledger.store.recorder.select_notifications(start=0, limit=10_000)]
    return [e for e in events if type(e).__qualname__ == "ScheduleFire.Recorded"]


def start_of_next_minute(after: datetime) -> datetime:
    return after.replace(second=0, microsecond=0) + timedelta(minutes=1)


def test_each_fire_creates_one_task_per_deployment(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="op")
    ledger.settings.set_schedule("snapshot_schedule", EVERY_MINUTE, actor="op")
    t0 = start_of_next_minute(datetime.now(UTC)) + timedelta(seconds=5)
    scheduler = Scheduler(ledger, LOG)
    scheduler.tick(t0)  # first look: the fire 5 s ago was due (within the missed-fire window)
    for minute in range(1, 4):
        scheduler.tick(t0 + timedelta(minutes=minute))
    recorded = [f for f in fires(ledger) if f.outcome == "fired"]
    assert [f.fire_time for f in recorded] == [
        t0.replace(second=0) + timedelta(minutes=i) for i in range(4)]
    for fire in recorded:
        tasks = [ledger.tasks.get(t) for t in fire.tasks]
        assert sorted(t.deployment for t in tasks) == ["a", "b"]
        assert all(t.trigger == "scheduled" and t.actor == "scheduler" for t in tasks)
        assert sum(len(t.operations) for t in tasks) == 3


def test_nothing_fires_while_disabled_and_no_burst_on_enable(ledger: Ledger) -> None:
    ledger.settings.set_schedule("snapshot_schedule", EVERY_MINUTE, actor="op")
    now = datetime.now(UTC)
    scheduler = Scheduler(ledger, LOG, missed_window=timedelta(hours=1))
    for minute in range(0, 30, 5):
        scheduler.tick(now + timedelta(minutes=minute))
    assert fires(ledger) == []
    ledger.settings.set_snapshots_enabled(True, actor="op")
    enabled_at = ledger.settings.current().enabled_at
    scheduler.tick(enabled_at + timedelta(seconds=1))
    assert fires(ledger) == []  # the fires while disabled were never due: not missed, not fired
    scheduler.tick(start_of_next_minute(enabled_at) + timedelta(seconds=1))
    assert len(fires(ledger)) == 1


def test_missed_fires_run_the_latest_once_and_record_the_rest(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="op")
    ledger.settings.set_schedule("snapshot_schedule", EVERY_MINUTE, actor="op")
    since = ledger.settings.current().since("snapshot_schedule")
    first = start_of_next_minute(since)
    # One scheduler ran for the first fire, then all were down for ten minutes.
    Scheduler(ledger, LOG).tick(first + timedelta(seconds=1))
    restart = first + timedelta(minutes=10, seconds=20)
    Scheduler(ledger, LOG, missed_window=timedelta(minutes=5)).tick(restart)
    by_time = {f.fire_time: f.outcome for f in fires(ledger)}
    assert by_time[first] == "fired"
    assert by_time[first + timedelta(minutes=10)] == "fired"  # the latest, within the window, once
    assert [by_time[first + timedelta(minutes=m)] for m in range(1, 10)] == ["missed"] * 9
    assert len(by_time) == 11

    # Outside the window nothing runs, all are recorded as missed.
    later = first + timedelta(minutes=30, seconds=10)
    Scheduler(ledger, LOG, missed_window=timedelta(seconds=5)).tick(later)
    by_time = {f.fire_time: f.outcome for f in fires(ledger)}
    assert [by_time[first + timedelta(minutes=m)] for m in range(11, 31)] == ["missed"] * 20


def test_schedule_changes_take_effect_without_restart(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="op")
    ledger.settings.set_schedule("snapshot_schedule", "0 0 7 * * * UTC", actor="op")
    now = datetime.now(UTC)
    scheduler = Scheduler(ledger, LOG)
    scheduler.tick(now)
    ledger.settings.set_schedule("snapshot_schedule", EVERY_MINUTE, actor="op")
    scheduler.tick(now + timedelta(seconds=1))  # picks the new expression up, from now on
    scheduler.tick(start_of_next_minute(now + timedelta(seconds=1)) + timedelta(seconds=1))
    recorded = fires(ledger)
    assert len(recorded) == 1 and recorded[0].expression == EVERY_MINUTE
    ledger.settings.set_schedule("snapshot_schedule", None, actor="op")  # off
    scheduler.tick(start_of_next_minute(now) + timedelta(minutes=3))
    assert len(fires(ledger)) == 1


def test_two_schedulers_record_each_fire_once(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="op")
    ledger.settings.set_schedule("snapshot_schedule", EVERY_MINUTE, actor="op")
    t0 = start_of_next_minute(datetime.now(UTC))
    replicas = [Scheduler(ledger, LOG) for _ in range(3)]
    for minute in range(4):
        for replica in replicas:
            replica.tick(t0 + timedelta(minutes=minute, seconds=1))
    recorded = fires(ledger)
    assert len(recorded) == len({f.fire_time for f in recorded}) == 4
    assert sum(r.fired for r in replicas) == 4


def test_self_schedule_creates_a_self_snapshot_task(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="op")
    ledger.settings.set_schedule("snapshot_schedule", None, actor="op")
    ledger.settings.set_schedule("self_snapshot_schedule", EVERY_MINUTE, actor="op")
    t0 = start_of_next_minute(datetime.now(UTC))
    scheduler = Scheduler(ledger, LOG)
    scheduler.tick(t0 - timedelta(seconds=1))
    scheduler.tick(t0 + timedelta(seconds=1))
    (fire,) = fires(ledger)
    (task_id,) = fire.tasks
    task = ledger.tasks.get(task_id)
    assert task.kind == "snapshot_self" and task.deployment == "_self" and task.trigger == "self"


def test_invalid_schedules_are_refused_where_they_enter(ledger: Ledger) -> None:
    with pytest.raises(CronError) as error:
        ledger.settings.set_schedule("snapshot_schedule", "0 0 7 ? * * UTC", actor="op")
    assert error.value.token == "?" and error.value.field == "day of month"
    assert ledger.settings.current().schedules["snapshot_schedule"] == "0 0 7 * * * UTC"  # BOSH default kept


def _daily_at(moment: datetime) -> str:
    """A schedule that fires once a day, at this moment's second (6 fields, seconds first)."""
    return f"{moment.second} {moment.minute} {moment.hour} * * * UTC"


def _sleep_until(moment: datetime) -> None:
    import time

    time.sleep(max((moment - datetime.now(UTC)).total_seconds(), 0) + 0.05)


def test_a_changed_schedule_never_fires_for_instants_before_the_change(ledger: Ledger) -> None:
    # Regression: the change's moment was taken from the settings' previous event
    # (eventsourcing applies an event before it moves `modified_on`), so a schedule
    # set now "caught up" a fire between the previous change and this one, and
    # snapshotted at once (as a restart that re-applied the file did).
    ledger.settings.set_snapshots_enabled(True, actor="op")
    ledger.settings.set_schedule("snapshot_schedule", None, actor="op")
    passed = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    _sleep_until(passed)  # `passed` is now in the past, after the last change
    ledger.settings.set_schedule("snapshot_schedule", _daily_at(passed), actor="config")
    Scheduler(ledger, LOG).tick(datetime.now(UTC))
    assert fires(ledger) == []


def test_re_enabling_never_fires_for_instants_while_disabled(ledger: Ledger) -> None:
    ledger.settings.set_schedule("snapshot_schedule", None, actor="op")
    passed = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    ledger.settings.set_schedule("snapshot_schedule", _daily_at(passed), actor="op")
    _sleep_until(passed)  # the fire passes while snapshots are disabled
    ledger.settings.set_snapshots_enabled(True, actor="op")
    Scheduler(ledger, LOG).tick(datetime.now(UTC))
    assert fires(ledger) == []
