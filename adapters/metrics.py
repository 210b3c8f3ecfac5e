"""Prometheus metrics.

Two kinds: what happens in this process (HTTP requests, CPI call latency in a
worker, projection lag seconds in a projector, scheduler fires) as ordinary
counters and histograms; and what is true of the whole ledger (tasks by state,
how far each view is behind the log) read from the database at scrape time,
so any API replica reports the same figures.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter("snapledger_http_requests_total", "HTTP requests by route and status",
                        ["method", "route", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("snapledger_http_request_seconds", "HTTP request latency by route",
                         ["method", "route"], registry=REGISTRY,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CPI_CALLS = Histogram("snapledger_cpi_call_seconds", "CPI call latency by CPI, method and outcome",
                      ["cpi", "method", "outcome"], registry=REGISTRY,
                      buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600))
PROJECTION_LAG_SECONDS = Gauge("snapledger_projection_lag_seconds",
                               "Age of the newest event the projector applied, when it applied it", registry=REGISTRY)


class LedgerCollector(Collector):
    """Whole-ledger figures, queried at scrape time."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runtime = self.runtime
        try:
            head = runtime.ledger.recorder.max_notification_id() or 0
            positions = runtime.projector.positions()
            tasks = runtime.db.query("SELECT state, COUNT(*) AS n FROM tasks_view GROUP BY state")
            in_doubt = runtime.db.query("SELECT COUNT(*) AS n FROM in_flight_ops WHERE state = 'in_doubt'")
            fires = runtime.db.query("SELECT schedule, outcome, COUNT(*) AS n FROM schedule_fires_view "
                                     "GROUP BY schedule, outcome")
        except Exception:  # the database is away: report what we can (process metrics)
            return
        lag = GaugeMetricFamily("snapledger_projection_lag_events", "Events the view has not applied yet",
                                labels=["view"])
        for view, position in positions.items():
            lag.add_metric([view], max(head - position, 0))
        yield lag
        by_state = GaugeMetricFamily("snapledger_tasks", "Tasks by state", labels=["state"])
        for row in tasks:
            by_state.add_metric([row["state"]], row["n"])
        yield by_state
        yield GaugeMetricFamily("snapledger_cpi_calls_in_doubt", "CPI calls in doubt, awaiting the operator",
                                value=in_doubt[0]["n"] if in_doubt else 0)
        fired = GaugeMetricFamily("snapledger_schedule_fires", "Schedule fires recorded, by outcome",
                                  labels=["schedule", "outcome"])
        for row in fires:
            fired.add_metric([row["schedule"], row["outcome"]], row["n"])
        yield fired
        yield GaugeMetricFamily("snapledger_log_head", "Position of the newest event in the log", value=head)


def observe_cpi_call(cpi: str, method: str, outcome: str, duration_s: float) -> None:
    CPI_CALLS.labels(cpi, method, outcome).observe(duration_s)


def serve_metrics(port: int) -> None:
    """For processes without the API (worker, projector, scheduler)."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=REGISTRY)
