"""`bosh events` filters are applied before the page's limit: with more
matching events than a page among many that do not match, a filtered page is
full (200) and paging by `before_id` walks every match exactly once, newest
first, as the Director's `GET /events` does. Both stores, the Director dialect
over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp.test_utils import TestClient, TestServer

from snapledger.adapters.bootstrap import Runtime, bootstrap
from snapledger.api.director import create_director_app
from support.runtime import make_config, make_disk
DISKS = 230  # more snapshots than a page (200); each is one Taken among several other events


async def _walk(client: TestClient, query: dict[str, str]) -> list[list[dict[str, Any]]]:
    pages, before = [], None
    while True:
        params = {**query, **({"before_id": before} if before else {})}
        resp = await client.get("/events", params=params)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        if not page:
            return pages
        pages.append(page)
        before = page[-1]["id"]


@asynccontextmanager
async def director_client(runtime: Runtime) -> AsyncIterator[TestClient]:
    """The Director dialect's own app over the runtime (no credentials store: auth is tested elsewhere)."""
    client = TestClient(TestServer(create_director_app(runtime, None)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def _snapshot_many(runtime: Runtime) -> None:
    instances = [{"job": "db", "index": i, "disks": [f"disk-{i}"]} for i in range(DISKS)]
    runtime.ledger.deployments.record("prod", {}, instances, actor="op")
    task = runtime.ledger.snapshots.take("prod", actor="op")
    for _ in range(6000):
        row = runtime.queries.task(str(task.id))
        if row is not None and row["state"] == "done":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"task unfinished: {row}")


async def test_filtered_pages_are_full_and_paging_walks_each_match_once(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url, enable_snapshots=True)
    for i in range(DISKS):
        make_disk(config, f"disk-{i}", {"d": b"x"})
    runtime = await asyncio.get_running_loop().run_in_executor(None, functools.partial(bootstrap, config))
    runtime.start()
    try:
        await _snapshot_many(runtime)
        async with director_client(runtime) as client:
            await _check_pages(client)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, runtime.close)


async def _check_pages(client: TestClient) -> None:
    pages = await _walk(client, {"action": "taken"})
    assert [len(p) for p in pages] == [200, DISKS - 200]
    taken = [e for p in pages for e in p]
    ids = [int(e["id"]) for e in taken]
    assert ids == sorted(set(ids), reverse=True)  # newest first, each once
    assert {(e["action"], e["object_type"]) for e in taken} == {("taken", "snapshot")}
    assert len({e["object_name"] for e in taken}) == DISKS  # one per snapshot CID

    pages = await _walk(client, {"object_type": "snapshot", "action": "cpi_call_started", "deployment": "prod"})
    assert [len(p) for p in pages] == [200, DISKS - 200]

    # One snapshot's life by its CID, from its request on (its first events are far behind a page).
    cid = taken[-1]["object_name"]
    life, = await _walk(client, {"object_name": cid})
    assert [e["action"] for e in reversed(life)][:3] == ["requested", "cpi_call_started", "taken"]
    assert {e["object_name"] for e in life} == {cid}

    number = str(taken[0]["task"])  # the task's own events by its number
    pages = await _walk(client, {"object_type": "task", "object_name": number})
    task_events = [e for p in pages for e in p]  # queued, started, one per operation, finished
    assert len(pages[0]) == 200 and len(task_events) >= DISKS + 3
    assert {(e["object_type"], e["object_name"]) for e in task_events} == {("task", number)}

    assert await _walk(client, {"action": "no_such_action"}) == []
    assert await _walk(client, {"action": "Taken"}) == []  # actions are shown snake-case, matched exactly
