"""6. The bosh CLI's reads of a 10,000-operation task, next to the native routes.

One task snapshots a deployment of N instances (one disk each) through the
real runtime (worker with a CPI that answers at once, projector). Then both
listeners serve it over real HTTP on loopback, and each read is timed
(median and p99 of Q requests):

- `bosh task N` polling: `GET /tasks/N/output?type=event` with
  `Range: bytes=<near the end>-` (Director port), next to the native CLI's
  poll `GET /tasks/ID/events?after=<last position - 2>`;
- the first read of the whole event output (`Range: bytes=0-`), next to the
  native `GET /tasks/ID/events` (every event of the task);
- `GET /tasks/N` on both, and `bosh snapshots` (`GET /deployments/D/snapshots`)
  next to the native listing.

Target: the Director routes answer within 2x of the native ones (no
per-request full scans: each poll reads only the audit rows it has not
rendered yet). A task still running at `director_take_timeout` is measured
as it runs (what `bosh task N` follows); the setup row says how far it got.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from common import Context, percentile, row

TARGET_RATIO = 2.0
MIN_OUTPUT = 64 * 1024  # bytes of event output before a running task is measured


def run(ctx: Context) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    operations = ctx.sizes.get("director_operations", 10_000)
    queries = ctx.sizes.get("director_queries", 200)
    for backend in ctx.backends():
        url = ctx.url_for(backend, "director")
        ctx.log(f"director: {backend}: a task of {operations} operations, {queries} reads per route")
        out += asyncio.run(_measure(ctx, backend, url, operations, queries))
    return out


def _runtime(ctx: Context, url: str) -> Any:
    from instant_cpi import InstantCpi

    from snapledger.adapters.config import load_config
    from snapledger.adapters.logging import configure_logging
    from snapledger.adapters.bootstrap import bootstrap

    config = load_config(ctx.config_file("director", url, worker={"max_in_flight": 32},
                                         cpis={"local": {"type": "local", "max_in_flight": 32}}))
    configure_logging(config.log_format, config.log_level)  # warnings only: per-call info lines would be measured
    return bootstrap(config, {"api", "worker", "projector"},
                     cpis={name: InstantCpi() for name in config.cpi_specs()})


def _take(runtime: Any, operations: int, timeout: float) -> tuple[Any, float, str]:
    ledger = runtime.ledger
    instances = [{"job": "db", "index": i, "disks": [f"disk-{i}"]} for i in range(operations)]
    ledger.deployments.record("bench", {}, instances, actor="bench")
    started = time.monotonic()
    task = ledger.snapshots.take("bench", actor="bench")
    deadline = started + timeout
    state = "queued"
    while time.monotonic() < deadline:
        row_ = runtime.queries.task(str(task.id))
        state = row_["state"] if row_ is not None else state
        if state in ("done", "error"):
            break
        time.sleep(0.2)
    return task, time.monotonic() - started, state


async def _measure(ctx: Context, backend: str, url: str, operations: int, queries: int) -> list[dict[str, Any]]:
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from common import auth_header
    from snapledger.api import auth
    from snapledger.api.app import create_app
    from snapledger.api.director import create_director_app

    runtime = _runtime(ctx, url)
    native_app = create_app(runtime)
    native = TestServer(native_app)
    await native.start_server()  # starts the runtime's roles (cleanup_ctx)
    director = TestServer(create_director_app(runtime, native_app.get(auth.AUTH)))
    await director.start_server()
    try:
        loop = asyncio.get_running_loop()
        task, took, state = await loop.run_in_executor(None, _take, runtime, operations,
                                                       ctx.sizes.get("director_take_timeout", 600.0))
        number, task_id = task.number, str(task.id)
        headers = {"Authorization": auth_header()}
        async with ClientSession(headers=headers) as http:
            async def timed(server: Any, path: str, extra: dict[str, str] | None = None,
                            status: int = 200) -> tuple[list[float], int]:
                times, size = [], 0
                for _ in range(queries):
                    began = time.perf_counter()
                    async with http.get(server.make_url(path), headers=extra or {}) as response:
                        body = await response.read()
                        assert response.status == status, (path, response.status, body[:300])
                    times.append((time.perf_counter() - began) * 1000)
                    size = len(body)
                return times, size

            # A task still running: measure once it has output to poll (the first disks' lines).
            deadline = time.monotonic() + ctx.sizes.get("director_take_timeout", 600.0)
            while True:
                async with http.get(director.make_url(f"/tasks/{number}/output?type=event")) as response:
                    whole = await response.read()
                if state in ("done", "error") or len(whole) >= MIN_OUTPUT or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            events = json.loads(await (await http.get(native.make_url(f"/tasks/{task_id}/events"))).read())
            last = events[-1]["position"]
            pairs = [
                ("task output, poll (Range near the end) vs native events?after",
                 await timed(director, f"/tasks/{number}/output?type=event",
                             {"Range": f"bytes={max(len(whole) - 200, 0)}-"}, 206),
                 await timed(native, f"/tasks/{task_id}/events?after={last - 2}")),
                ("task output, whole (Range bytes=0-) vs native events (all)",
                 await timed(director, f"/tasks/{number}/output?type=event", {"Range": "bytes=0-"}, 206),
                 await timed(native, f"/tasks/{task_id}/events")),
                ("GET /tasks/N vs native GET /tasks/ID",
                 await timed(director, f"/tasks/{number}"), await timed(native, f"/tasks/{task_id}")),
                ("bosh snapshots vs native listing",
                 await timed(director, "/deployments/bench/snapshots"),
                 await timed(native, "/deployments/bench/snapshots")),
            ]
    finally:
        await director.close()
        await native.close()
    finished = sum(1 for e in events if e["type"] in ("Snapshot.Taken", "Snapshot.Failed"))
    out = [row("director", backend, f"{operations}-operation task, {state} after (setup)", round(took, 2), None,
               "s", events=len(events), output_bytes=len(whole), operations_finished=finished)]
    for metric, (ours, our_size), (theirs, their_size) in pairs:
        for p in (50, 99):
            mine, base = percentile(ours, p), percentile(theirs, p)
            ratio_ok = None if p == 50 else (mine is not None and base is not None and mine <= TARGET_RATIO * base)
            out.append(row("director", backend, f"{metric}, p{p}", mine, base, "ms",
                           target=f"<= {TARGET_RATIO}x native" if p == 99 else "", met=ratio_ok,
                           bytes=our_size, native_bytes=their_size))
    return out
