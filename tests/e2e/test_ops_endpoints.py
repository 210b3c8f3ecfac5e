"""Liveness, readiness and metrics, as a load balancer and Prometheus use them."""

from __future__ import annotations

from pathlib import Path

from support.runtime import api_client, make_config, wait_task


async def test_health_ready_and_metrics(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    (config.data_dir / "disks" / "disk-a").mkdir(parents=True)
    async with api_client(config, user=None) as anonymous:
        assert (await anonymous.get("/health")).status == 200  # no credentials needed
        ready = await anonymous.get("/ready")
        assert ready.status == 200 and (await ready.json())["event_store"] == "ok"
    async with api_client(config) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})
        resp = await client.post("/deployments/prod/snapshots", headers={"X-Request-Id": "req-42"})
        assert resp.headers["X-Request-Id"] == "req-42"
        await wait_task(client, (await resp.json())["task_id"])
        text = await (await client.get("/metrics")).text()
    assert 'snapledger_http_requests_total{method="POST",route="/deployments/{deployment}/snapshots",status="202"}' in text
    assert 'snapledger_cpi_call_seconds_count{cpi="local",method="snapshot_disk",outcome="taken"}' in text
    assert 'snapledger_tasks_finished_total{state="done"}' in text  # a counter since issue 18
    assert 'snapledger_projection_lag_events{view="snapshots"} 0.0' in text


async def test_not_ready_while_the_views_lag(tmp_path: Path, sqlite_url: str) -> None:
    config = make_config(tmp_path, sqlite_url, ready_max_lag=0)
    async with api_client(config, roles={"api"}) as client:  # no projector: the views stay behind
        assert (await client.get("/ready")).status == 200
        await client.put("/deployments/prod", json={"instances": []})
        resp = await client.get("/ready")
        body = await resp.json()
        assert resp.status == 503 and body["status"] == "lagging"
        assert body["projection_lag_events"]["deployments"] > 0
