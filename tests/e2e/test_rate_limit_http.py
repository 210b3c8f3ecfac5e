"""A configured rate limit wraps the external CPI of a real runtime (both backends)."""

from __future__ import annotations

from pathlib import Path

from snapledger.adapters.rate_limit import RateLimitedCpi

from support.runtime import api_client
from test_external_cpi_http import deploy, external_config, run_task

THROTTLED = "RequestLimitExceeded"


async def test_a_throttling_answer_slows_the_shared_bucket_and_the_call_is_retried(
        tmp_path: Path, store_url: str) -> None:
    config, state = external_config(
        tmp_path, store_url, {"snapshot_disk": {"mode": "error", "type": THROTTLED, "ok_to_retry": True,
                                                "message": "Request limit exceeded.", "times": 1}})
    config.cpis["aws"]["rate_limit"] = {"calls": 50, "per": "1s", "burst": 2, "throttle_errors": [THROTTLED]}
    captured = {}
    async with api_client(config, customise=lambda runtime: captured.update(runtime=runtime)) as client:
        assert isinstance(captured["runtime"].cpis["aws"], RateLimitedCpi)
        await deploy(client, state, disks=3)
        task, _ = await run_task(client, "POST", "/deployments/prod/snapshots")
        assert task["state"] == "done", task
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert len(listing) == 3
        rows = captured["runtime"].db.query("SELECT bucket, slowdown FROM cpi_rate_limits")
        assert rows == [{"bucket": "aws:*", "slowdown": 2.0}]


async def test_without_a_rate_limit_the_cpi_is_not_wrapped(tmp_path: Path, sqlite_url: str) -> None:
    config, _ = external_config(tmp_path, sqlite_url)
    captured = {}
    async with api_client(config, customise=lambda runtime: captured.update(runtime=runtime)):
        assert not isinstance(captured["runtime"].cpis["aws"], RateLimitedCpi)
