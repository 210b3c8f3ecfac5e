"""The scheduler: turns due cron fires into recorded commands, exactly once across replicas.

It only emits commands (tasks with snapshot requests); workers do the
snapshots. Every fire has a deterministic id (schedule name + fire time), so
when several schedulers run against one event store each fire is recorded
once and the others get a conflict and move on. No leader election.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from snapledger.domain.application import Ledger
from snapledger.domain.cron import CronError, CronSchedule
from snapledger.domain.schedule import ScheduleFire
from snapledger.domain.settings import SCHEDULE_NAMES, SNAPSHOT_SCHEDULE
from snapledger.domain.log import Log

UTC = UTC
TICK_S = 1.0  # runtime schedule changes take effect within a tick


class Scheduler:
    def __init__(self, ledger: Ledger, log: Log, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 missed_window: timedelta = timedelta(hours=1), max_missed: int = 1000) -> None:
        self.ledger = ledger
        self.log = log.bind(component="scheduler")
        self.clock = clock
        self.missed_window = missed_window
        self.max_missed = max_missed
        # schedule name -> (expression, time up to which fires were handled)
        self.cursors: dict[str, tuple[str, datetime]] = {}
        self.fired = 0  # fires this replica recorded (others' conflicts not counted)
        # Scheduled snapshot fires whose retention follow-up is due once their tasks finish.
        self.follow_ups: list[ScheduleFire] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime | None = None) -> None:
        now = now or self.clock()
        self._retention_follow_ups(now)
        settings = self.ledger.settings.current()
        if not settings.enable_snapshots:
            # Nothing fires while disabled; on re-enable, fires before then were never due.
            self.cursors.clear()
            return
        for name in SCHEDULE_NAMES:
            expression = settings.schedules.get(name)
            if not expression:
                self.cursors.pop(name, None)
                continue
            try:
                schedule = CronSchedule.parse(expression)
            except CronError as error:  # validated where it entered; never crash a running scheduler
                self.log.error("invalid schedule ignored", schedule=name, error=str(error))
                continue
            cursor = self.cursors.get(name)
            if cursor is None:
                self._catch_up(name, expression, schedule, settings.since(name), now)
            elif cursor[0] == expression:
                for fire_time in schedule.fires_between(cursor[1], now):
                    self._fire(name, expression, fire_time)
            # A changed expression takes effect from now on.
            self.cursors[name] = (expression, now)

    def _catch_up(self, name: str, expression: str, schedule: CronSchedule, since: datetime,
                  now: datetime) -> None:
        """On start: the latest missed fire within the window runs once; older
        unrecorded ones are recorded as missed, never fired in a burst."""
        unrecorded: list[datetime] = []
        fire_time = schedule.previous_fire(now)
        while fire_time > since and len(unrecorded) < self.max_missed:
            if self.ledger.schedules.fire_recorded(name, fire_time):
                break
            unrecorded.append(fire_time)
            fire_time = schedule.previous_fire(fire_time - timedelta(microseconds=1))
        if not unrecorded:
            return
        if now - unrecorded[0] <= self.missed_window:
            self._fire(name, expression, unrecorded.pop(0))
        if unrecorded:
            count = self.ledger.schedules.record_missed(
                name, expression, sorted(unrecorded),
                reason=f"no scheduler was running; only the latest fire within {self.missed_window} runs")
            self.log.warning("missed fires recorded", schedule=name, count=count,
                             oldest=unrecorded[-1].isoformat(), newest=unrecorded[0].isoformat())

    def _fire(self, name: str, expression: str, fire_time: datetime) -> None:
        fire = self.ledger.schedules.fire(name, expression, fire_time)
        if fire is None:
            self.log.debug("fire already recorded by another replica", schedule=name, fire_time=fire_time.isoformat())
            return
        self.fired += 1
        self.log.info("schedule fired", schedule=name, fire_time=fire_time.isoformat(), tasks=len(fire.tasks))
        for task_id in fire.tasks:  # as the API's "task accepted": one line per task, with its number
            self.log.info("scheduled task queued", schedule=name, task_id=task_id)
        if name == SNAPSHOT_SCHEDULE:
            self.follow_ups.append(fire)

    def _retention_follow_ups(self, now: datetime) -> None:
        """Retention runs after every scheduled snapshot, once its tasks finished.
        The run's task id derives from the fire and the deployment, so it is
        recorded once even if several replicas get here."""
        from uuid import NAMESPACE_URL, uuid5

        from eventsourcing.persistence import IntegrityError

        still = []
        for fire in self.follow_ups:
            tasks = [self.ledger.tasks.get(t) for t in fire.tasks]
            if not all(t.is_finished for t in tasks):
                still.append(fire)
                continue
            for task in tasks:
                if task.deployment is None:
                    continue  # a task of no deployment (self snapshots) has no retention to run
                if self.ledger.retention.policy(task.deployment)[0].is_empty:
                    continue  # no policy: nothing ever expires, no task needed
                task_id = uuid5(NAMESPACE_URL, f"snapledger:/retention-after/{fire.id}/{task.deployment}")
                with suppress(IntegrityError):  # another replica ran it
                    self.ledger.retention.run(task.deployment, actor="scheduler", now=now,
                                              trigger="after_scheduled_snapshot", task_id=task_id)
        self.follow_ups = still

    def seconds_to_next(self, now: datetime) -> float:
        waits = [TICK_S]
        for expression, _ in self.cursors.values():
            try:
                waits.append((CronSchedule.parse(expression).next_fire(now) - now).total_seconds())
            except CronError:
                continue
        return max(0.01, min(waits))

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as error:  # event store outage: keep going, fires are caught up later
                self.log.error("scheduler tick failed", error=repr(error))
            self._stop.wait(self.seconds_to_next(self.clock()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
