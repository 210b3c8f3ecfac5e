"""Prometheus metrics.

Two kinds: what happens in this process (HTTP requests, CPI call latency in a
worker, projection lag seconds in a projector) as ordinary counters and
histograms; and what is true of the whole ledger (did the backups happen,
failures, tasks, how far each view is behind the log) read from the views at
scrape time, so any API replica reports the same figures.

Cumulative figures are counters (`*_total`) even when they are read from a
view: each is a count of rows that never leave the counted state (a failed
snapshot stays failed, an audit event stays), so it only grows, as Prometheus
expects of a counter. Current figures (tasks in progress, snapshots by
state, calls in doubt) are gauges. No `_created` series: they double the
series count and nothing here alerts on them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from typing import TYPE_CHECKING, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from snapledger.domain.job_update import FAILED as JOB_UPDATE_FAILED
from snapledger.projections.database import Row
from snapledger.projections.in_flight import AWAITING_OPERATOR

if TYPE_CHECKING:
    from snapledger.adapters.bootstrap import Runtime


class Query(Protocol):
    """The event store's query (Database.query), which the families read their views with."""

    def __call__(self, statement: str, params: Sequence[object] = ..., /) -> list[Row]: ...

# (prometheus_client leaves this one function unannotated)
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
# process_* (CPU, memory, open files, start time) and python_info, as every Python exporter has them.
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)

BUILD_INFO = Info("snapledger_build", "The running snapledger's version", registry=REGISTRY)
# The installed distribution's version, which pyproject reads from api/version.py: the
# metric says what `snapledger --version` says without adapters/ importing the HTTP room.
BUILD_INFO.info({"version": version("snapledger")})

HTTP_REQUESTS = Counter("snapledger_http_requests_total", "HTTP requests by route and status",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("snapledger_http_request_seconds", "HTTP request latency by route",
                         ["method", "route"], registry=REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CPI_CALLS = Histogram("snapledger_cpi_call_seconds", "CPI call latency by CPI, method and outcome",
                      ["cpi", "method", "outcome"], registry=REGISTRY,
                      buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600))
# A rate-limited external CPI's calls (decision 43): slots given up because the call
# could not start within 5 ms of them (each one a slot of the limit lost: a host too
# busy to hand calls over in time), and the lead this process reserves slots with.
CPI_SLOTS_MISSED = Counter("snapledger_cpi_rate_limit_slots_missed_total",
                           "Rate-limit slots given up: the call could not start in time (then took another)",
                           ["cpi"], registry=REGISTRY)
CPI_START_LEAD = Gauge("snapledger_cpi_rate_limit_lead_seconds",
                       "How far ahead this process reserves rate-limit slots for a CPI's calls",
                       ["cpi"], registry=REGISTRY)
PROJECTION_LAG_SECONDS = Gauge("snapledger_projection_lag_seconds",
                               "Age of the newest event the projector applied, when it applied it", registry=REGISTRY)

FINISHED_TASK_STATES = ("done", "error")
# Audit event types that are a failed CPI operation on a snapshot, and the operation's name.
FAILED_OPERATIONS = {"Snapshot.Failed": "snapshot", "Snapshot.DeletionFailed": "delete"}


def epoch(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


def error_type(described: str | None) -> str:
    """The type of an error the views store as "Type: message"."""
    return (described or "unknown").split(": ", 1)[0] or "unknown"


def schedule_interval_s(expression: str, now: datetime) -> float:
    """The length of the schedule's period that holds `now`: from its previous
    fire to its next one (a weekday schedule's period over a weekend is three
    days, so an alert built on it does not fire on Sunday)."""
    from snapledger.domain.cron import CronSchedule

    schedule = CronSchedule.parse(expression)
    return (schedule.next_fire(now) - schedule.previous_fire(now)).total_seconds()


class LedgerCollector(Collector):
    """Whole-ledger figures, queried at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self._families())
        except Exception:  # the database is away: report what we can (process metrics)
            return
        yield from families

    def _families(self) -> Iterable[Metric]:
        runtime = self.runtime
        query = runtime.db.query
        head = runtime.ledger.store.recorder.max_notification_id() or 0
        lag = GaugeMetricFamily("snapledger_projection_lag_events", "Events the view has not applied yet",
                                labels=["view"])
        for view, position in runtime.projector.positions().items():
            lag.add_metric([view], max(head - position, 0))
        yield lag
        yield GaugeMetricFamily("snapledger_log_head", "Position of the newest event in the log", value=head)
        yield from self._backups(query)
        yield from self._failures(query)
        yield from self._tasks(query)
        yield from self._schedules(query)
        in_doubt = query("SELECT COUNT(*) AS n FROM in_flight_ops WHERE state = %s", (AWAITING_OPERATOR,))
        yield GaugeMetricFamily("snapledger_cpi_calls_in_doubt", "CPI calls in doubt, awaiting the operator",
                                value=in_doubt[0]["n"] if in_doubt else 0)

    def _backups(self, query: Query) -> Iterable[Metric]:
        """Did the backups happen: the newest snapshot taken per live deployment,
        and every deployment's snapshots by state."""
        last = GaugeMetricFamily(
            "snapledger_last_successful_snapshot_timestamp_seconds",
            "When the newest snapshot of the deployment was taken (Unix time); deleted deployments are left out",
            labels=["deployment"])
        rows = query("SELECT s.deployment, MAX(s.created_at) AS at FROM snapshots_view AS s "
                     "WHERE s.created_at IS NOT NULL AND s.deployment NOT IN "
                     "(SELECT name FROM deployments_view WHERE deleted) GROUP BY s.deployment")
        for row in rows:
            last.add_metric([row["deployment"]], epoch(row["at"]))
        yield last
        by_state = GaugeMetricFamily("snapledger_snapshots", "Snapshots by deployment and state",
                                     labels=["deployment", "state"])
        for row in query("SELECT deployment, state, COUNT(*) AS n FROM snapshots_view GROUP BY deployment, state"):
            by_state.add_metric([row["deployment"], row["state"]], row["n"])
        yield by_state

    def _failures(self, query: Query) -> Iterable[Metric]:
        failed = CounterMetricFamily(
            "snapledger_operation_failures",
            "Failed snapshot and deletion CPI operations, by deployment and error type",
            labels=["deployment", "operation", "error_type"])
        counts: dict[tuple[str, str, str], int] = {}
        types = list(FAILED_OPERATIONS)
        placeholders = ", ".join(["%s"] * len(types))
        for row in query(f"SELECT type, deployment, data FROM audit_events WHERE type IN ({placeholders})", types):
            error = (json.loads(row["data"]).get("error") or {}).get("type") or "unknown"
            key = (row["deployment"] or "", FAILED_OPERATIONS[row["type"]], error)
            counts[key] = counts.get(key, 0) + 1
        for labels, n in sorted(counts.items()):
            failed.add_metric(list(labels), n)
        yield failed
        job_updates = CounterMetricFamily(
            "snapledger_job_update_failures", "Instances whose job update failed (drain, stop, clean snapshot, "
            "worker lost), by deployment and error type", labels=["deployment", "error_type"])
        counts2: dict[tuple[str, str], int] = {}
        for row in query("SELECT t.deployment, i.error FROM job_update_instances_view AS i "
                         "JOIN tasks_view AS t ON t.task_id = i.task_id WHERE i.state = %s", (JOB_UPDATE_FAILED,)):
            key2 = (row["deployment"] or "", error_type(row["error"]))
            counts2[key2] = counts2.get(key2, 0) + 1
        for labels2, n in sorted(counts2.items()):
            job_updates.add_metric(list(labels2), n)
        yield job_updates
        expired = CounterMetricFamily("snapledger_retention_expirations", "Snapshots expired by retention",
                                      labels=["deployment"])
        for row in query("SELECT deployment, COUNT(*) AS n FROM audit_events WHERE type = 'Snapshot.Expired' "
                         "GROUP BY deployment"):
            expired.add_metric([row["deployment"] or ""], row["n"])
        yield expired

    def _tasks(self, query: Query) -> Iterable[Metric]:
        rows = query("SELECT state, COUNT(*) AS n FROM tasks_view GROUP BY state")
        finished = CounterMetricFamily("snapledger_tasks_finished", "Tasks that ended, by final state",
                                       labels=["state"])
        active = GaugeMetricFamily("snapledger_tasks_active", "Tasks queued or processing now", labels=["state"])
        for state in FINISHED_TASK_STATES:  # both series always exist, so rate() and increase() work from 0
            finished.add_metric([state], sum(r["n"] for r in rows if r["state"] == state))
        for row in rows:
            if row["state"] not in FINISHED_TASK_STATES:
                active.add_metric([row["state"]], row["n"])
        yield finished
        yield active

    def _schedules(self, query: Query) -> Iterable[Metric]:
        fired = CounterMetricFamily("snapledger_schedule_fires", "Schedule fires recorded, by schedule and outcome",
                                    labels=["schedule", "outcome"])
        for row in query("SELECT schedule, outcome, COUNT(*) AS n FROM schedule_fires_view "
                         "GROUP BY schedule, outcome"):
            fired.add_metric([row["schedule"], row["outcome"]], row["n"])
        yield fired
        settings = self.runtime.ledger.settings.current()
        yield GaugeMetricFamily("snapledger_snapshots_enabled", "1 when snapshots are enabled",
                                value=1 if settings.enable_snapshots else 0)
        interval = GaugeMetricFamily(
            "snapledger_schedule_interval_seconds",
            "Length of the schedule's current period, previous fire to next (absent when the schedule is off)",
            labels=["schedule"])
        now = datetime.now(UTC)
        for name, expression in sorted(settings.schedules.items()):
            if expression:
                interval.add_metric([name], schedule_interval_s(expression, now))
        yield interval


def observe_cpi_call(cpi: str, method: str, outcome: str, duration_s: float) -> None:
    CPI_CALLS.labels(cpi, method, outcome).observe(duration_s)


def serve_metrics(port: int) -> None:
    """For processes without the API (worker, projector, scheduler)."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=REGISTRY)
