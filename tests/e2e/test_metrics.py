"""/metrics as Prometheus scrapes it, parsed with prometheus_client's own
parser: the names and types an operator's alerts and dashboards rely on
("did my backups happen?"), counters for every cumulative count, and no
`_created` noise. One server per test covers a snapshot taken, one failed,
a failed drain and a retention expiration."""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from snapledger.api.version import VERSION
from support.runtime import api_client, make_config, make_disk, wait_task

ALERTS = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"


def scrape(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if name is None or s.name == name}


def drain_script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


async def test_backup_failure_and_counter_metrics(tmp_path: Path, store_url: str) -> None:
    jobs = tmp_path / "jobs"
    drain_script(jobs / "db" / "bin" / "drain", "echo 'disk busy' >&2\nexit 3\n")
    config = make_config(tmp_path, store_url, jobs_dir=jobs)
    make_disk(config, "disk-a")  # disk-gone has no directory: the local CPI answers DiskNotFound
    async with api_client(config) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]},
                                                                  {"job": "db", "index": 1, "disks": ["disk-gone"]}]})
        before = time.time()
        for _ in range(2):
            task = await wait_task(client, (await (await client.post("/deployments/prod/snapshots")).json())["task_id"])
            assert task["state"] == "error"  # disk-gone fails each time
        after = time.time()
        await client.put("/deployments/prod/retention", json={"keep_last": 1})
        await wait_task(client, (await (await client.post("/deployments/prod/retention/runs")).json())["task_id"])
        update = await client.post("/deployments/prod/jobs/db/0/updates", json={})
        assert update.status == 202, await update.text()
        assert (await wait_task(client, (await update.json())["task_id"]))["state"] == "error"
        resp = await client.get("/metrics")
        assert resp.status == 200
        families = scrape(await resp.text())

    counters = {name for name, f in families.items() if f.type == "counter"}
    assert {"snapledger_http_requests", "snapledger_operation_failures", "snapledger_job_update_failures",
            "snapledger_retention_expirations", "snapledger_tasks_finished", "snapledger_schedule_fires"} <= counters
    for name in counters:  # each counter's samples are NAME_total, never NAME_created
        assert {s.name for s in families[name].samples} <= {f"{name}_total"}, name
    assert not [s.name for f in families.values() for s in f.samples if s.name.endswith("_created")]

    assert families["snapledger_build_info"].type == "gauge"  # the text format exposes an Info as a gauge of 1
    assert samples(families["snapledger_build_info"]) == {(("version", VERSION),): 1.0}
    assert families["process_resident_memory_bytes"].type == "gauge"
    assert families["process_cpu_seconds"].type == "counter"

    last = samples(families["snapledger_last_successful_snapshot_timestamp_seconds"])
    assert families["snapledger_last_successful_snapshot_timestamp_seconds"].type == "gauge"
    assert list(last) == [(("deployment", "prod"),)]
    assert before - 1 <= last[(("deployment", "prod"),)] <= after + 1
    by_state = samples(families["snapledger_snapshots"])
    assert by_state[(("deployment", "prod"), ("state", "failed"))] == 2
    assert by_state[(("deployment", "prod"), ("state", "deleted"))] == 1  # expired by keep_last 1, then deleted
    assert by_state[(("deployment", "prod"), ("state", "taken"))] == 1

    assert samples(families["snapledger_operation_failures"]) == {
        (("deployment", "prod"), ("error_type", "Bosh::Clouds::DiskNotFound"), ("operation", "snapshot")): 2}
    job_failures = samples(families["snapledger_job_update_failures"])
    assert list(job_failures.values()) == [1] and dict(next(iter(job_failures)))["deployment"] == "prod"
    assert samples(families["snapledger_retention_expirations"]) == {(("deployment", "prod"),): 1}
    finished = samples(families["snapledger_tasks_finished"])
    assert finished[(("state", "error"),)] == 3 and finished[(("state", "done"),)] >= 1

    assert samples(families["snapledger_snapshots_enabled"]) == {(): 1}
    assert samples(families["snapledger_schedule_interval_seconds"]) == {  # BOSH's daily defaults
        (("schedule", "self_snapshot_schedule"),): 86400, (("schedule", "snapshot_schedule"),): 86400}
    assert samples(families["snapledger_cpi_calls_in_doubt"]) == {(): 0}
    assert families["snapledger_projection_lag_events"].type == "gauge"

    # Every series ops/prometheus/alerts.yml alerts on is one this scrape has.
    scraped = {s.name for f in families.values() for s in f.samples}
    assert set(re.findall(r"snapledger_[a-z_]+", ALERTS.read_text())) <= scraped


async def test_a_deleted_deployment_has_no_last_snapshot_series(tmp_path: Path, sqlite_url: str) -> None:
    """Else the no-snapshot alert fires forever for a deployment that is gone."""
    config = make_config(tmp_path, sqlite_url)
    for name in ("prod", "old"):
        make_disk(config, f"disk-{name}")
    async with api_client(config) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        for name in ("prod", "old"):  # a disk belongs to one deployment
            await client.put(f"/deployments/{name}", json={"instances": [
                {"job": "db", "index": 0, "disks": [f"disk-{name}"]}]})
            await wait_task(client, (await (await client.post(f"/deployments/{name}/snapshots")).json())["task_id"])
        await client.delete("/deployments/old")
        await client.put("/config/snapshots", json={"snapshot_schedule": "off", "enable_snapshots": False})
        for _ in range(100):  # the deletion reaches the deployments view
            families = scrape(await (await client.get("/metrics")).text())
            if len(families["snapledger_last_successful_snapshot_timestamp_seconds"].samples) == 1:
                break
            time.sleep(0.02)
    assert [s.labels for s in families["snapledger_last_successful_snapshot_timestamp_seconds"].samples] == [
        {"deployment": "prod"}]
    assert samples(families["snapledger_snapshots_enabled"]) == {(): 0}
    assert list(samples(families["snapledger_schedule_interval_seconds"])) == [(("schedule", "self_snapshot_schedule"),)]
