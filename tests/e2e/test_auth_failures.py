"""What wrong credentials may cost others is bounded (issue 16, item 5): a
source that keeps failing is answered `429` with `Retry-After` before any
hashing, a full hashing pool answers the same, and a client whose secret was
verified keeps being served meanwhile. Real HTTP; the figures of what a flood
costs a valid client are ops/bench/auth_flood.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import encode_basic_auth

from snapledger.api import auth
from support.runtime import api_client, auth_as, make_config

WRONG = {"Authorization": encode_basic_auth("admin", "not-the-secret")}
UNKNOWN = {"Authorization": encode_basic_auth("nobody", "whatever")}


async def test_a_source_that_keeps_failing_is_told_to_wait(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        assert (await client.get("/info")).status == 200  # the valid client's secret is verified once
        # The service's budget, with a refill too slow to matter on a busy test machine.
        burst = 4
        client.app[auth.AUTH].failures = auth.FailureBudget(burst=burst, rate_per_s=0.001)
        statuses = []
        for headers in [WRONG, UNKNOWN] * burst:
            resp = await client.get("/info", headers=headers)
            statuses.append(resp.status)
        assert statuses[:burst] == [401] * burst  # constant-time 401s first
        assert set(statuses[burst:]) == {429}, statuses
        refused = await client.get("/deployments", headers=WRONG)
        body = await refused.json()
        assert refused.status == 429 and body["code"] == "too_many_requests", body
        assert int(refused.headers["Retry-After"]) >= 1
        # The verified client is not punished for its neighbour: no hash needed, served at once.
        assert (await client.get("/info")).status == 200
        assert (await client.get("/info", headers=auth_as("reader"))).status == 429  # an unverified one waits


async def test_a_full_hashing_pool_answers_429_not_a_queue(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        assert (await client.get("/info")).status == 200
        store = client.app[auth.AUTH]
        store.failures = auth.FailureBudget(burst=10_000)  # only the pool's bound is under test here
        flood = [client.get("/info", headers={"Authorization": encode_basic_auth("admin", f"wrong-{i}")})
                 for i in range(3 * auth.AUTH_MAX_PENDING)]
        valid = [client.get("/info") for _ in range(20)]
        answers = await asyncio.gather(*flood, *valid)
        flooded = [r.status for r in answers[:len(flood)]]
        assert set(flooded) <= {401, 429} and 429 in flooded, flooded
        assert all(r.status == 200 for r in answers[len(flood):])
        assert "Retry-After" in next(r for r in answers if r.status == 429).headers
        assert store.pending == 0


async def test_429_is_documented_for_authenticated_routes(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url), user=None) as client:
        document = await (await client.get("/openapi.json")).json()
    assert "429" in document["paths"]["/info"]["get"]["responses"]
    assert "429" not in document["paths"]["/health"]["get"]["responses"]
