"""Following a task with the CLI while the API process restarts, stays away, or the user presses Ctrl-C.

The API runs as its own process (`snapledger api`) beside a worker and a
projector over one PostgreSQL, so the API can die and come back while the
task goes on in the worker, as it does in production. A drain script that
sleeps makes the task last long enough to lose the API in the middle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.process import CREDENTIALS, SNAPLEDGER, Server, cli, free_port

DRAIN_S = 3


class Stack:
    def __init__(self, data_dir: Path, pg_url: str) -> None:
        self.data_dir, self.pg_url = data_dir, pg_url
        self.api = Server(data_dir, pg_url, command="api").start()
        self.others = [Server(data_dir, pg_url, command=c).start() for c in ("worker", "projector")]

    def restart_api(self) -> None:
        self.api = Server(self.data_dir, self.pg_url, command="api", port=self.api.port).start()

    def stop(self) -> None:
        for process in (self.api, *self.others):
            process.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_database: str) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("follow") / "data"
    (data_dir / "disks" / "disk-db-0").mkdir(parents=True)
    drain = data_dir / "jobs" / "db" / "bin" / "drain"
    drain.parent.mkdir(parents=True)
    drain.write_text(f"#!/bin/sh\nsleep {DRAIN_S}\necho 0\n")
    drain.chmod(0o755)
    stack = Stack(data_dir, f"{pg_database}?schema=cli_follow")
    stack.api.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-db-0"]}]})
    stack.api.api("PUT", "/config/snapshots", {"enable_snapshots": True})
    yield stack
    stack.stop()


def cli_env(stack: Stack) -> dict[str, str]:
    return {**os.environ, "TZ": "UTC", "SNAPLEDGER_CREDENTIALS": str(CREDENTIALS[stack.api.url])}


def follow(stack: Stack, *args: str) -> subprocess.Popen[str]:
    """`snapledger update-job -d prod db/0 ...` in the background, as an operator's terminal runs it."""
    return subprocess.Popen([SNAPLEDGER, "--url", stack.api.url, *args, "update-job", "-d", "prod", "db", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(stack))


def draining(stack: Stack) -> tuple[str, int]:
    """The running job update's task id and number, once its drain has started."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for task in stack.api.api("GET", "/tasks?state=processing"):
            events = stack.api.api("GET", f"/tasks/{task['id']}/events")
            if any(e["type"] == "JobUpdate.DrainStarted" for e in events):
                return task["id"], task["number"]
        time.sleep(0.05)
    raise AssertionError("no drain started")


def test_following_survives_an_api_restart(stack: Stack) -> None:
    proc = follow(stack, "--reconnect-for", "60")
    task_id, number = draining(stack)
    stack.api.kill()
    time.sleep(1)  # the CLI finds nobody there: connection refused, then retries
    stack.restart_api()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "snapledger unavailable" in err and f"re-attach with `snapledger task {task_id}`" in err, err
    assert "reconnected to snapledger" in err
    assert err.count("snapledger unavailable") == 1  # said once per outage, not once per retry
    assert "db/0: ready for update" in out and f"Task {number} done at" in out
    assert out.count(f"Task {number} done") == 1  # the summary once, no event shown twice after the restart
    assert out.count("db/0: drain (update) of db") == 1


def test_giving_up_exits_3_and_the_task_goes_on(stack: Stack) -> None:
    proc = follow(stack, "--reconnect-for", "1")
    task_id, number = draining(stack)
    stack.api.kill()
    out, err = proc.communicate(timeout=30)
    try:
        assert proc.returncode == 3, out + err
        assert "lost contact with snapledger" in err and f"`snapledger task {task_id}`" in err
        assert "Traceback" not in err
    finally:
        stack.restart_api()
    # Re-attached as told: the task went on without the API and ends done.
    result = cli(stack.api.url, "task", task_id)
    assert result.returncode == 0 and f"Task {number} done at" in result.stdout, result.stdout + result.stderr


def test_ctrl_c_says_the_task_goes_on(stack: Stack) -> None:
    proc = follow(stack)
    task_id, number = draining(stack)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert f"stopped following task {task_id}" in err and f"`snapledger task {task_id}`" in err
    assert "Traceback" not in err
    assert stack.api.wait_task(task_id)["state"] == "done"  # Ctrl-C stopped the CLI, not the task


def _task_polls(url: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "snapledger_http_requests_total" and s.labels.get("route") == "/tasks/{task_id}")


def test_following_is_a_long_poll_not_a_busy_loop(stack: Stack) -> None:
    # The old CLI asked twice every 0.25 s: a 3 s drain cost 24+ requests. A long poll
    # answers when the task moves, so following costs a few requests per step.
    before = _task_polls(stack.api.url)
    result = subprocess.run([SNAPLEDGER, "--url", stack.api.url, "update-job", "-d", "prod", "db", "0"],
                            capture_output=True, text=True, timeout=60, env=cli_env(stack))
    assert result.returncode == 0, result.stderr
    polls = _task_polls(stack.api.url) - before
    steps = sum(1 for line in result.stdout.splitlines() if " UTC  " in line)
    assert polls <= steps + 2, (polls, result.stdout)


class Unavailable:
    """A real HTTP hop in front of the API that answers 503 while switched on, as the
    API does when its event store is unreachable (or a load balancer with no backend)."""

    def __init__(self, upstream: str) -> None:
        import threading

        self.upstream = upstream
        self.on = threading.Event()
        self.refused = threading.Event()  # at least one 503 was answered
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, ready: Any) -> None:
        import asyncio

        from aiohttp import ClientSession, ClientTimeout, web

        async def handle(request: web.Request) -> web.StreamResponse:
            if self.on.is_set():
                self.refused.set()
                return web.json_response({"error": "the event store is unreachable", "code": "unavailable"},
                                         status=503)
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
            async with ClientSession(timeout=ClientTimeout(total=90)) as session:
                async with session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                           data=await request.read()) as resp:
                    return web.Response(status=resp.status, body=await resp.read(),
                                        content_type=resp.content_type)

        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


def test_503s_while_following_are_retried(stack: Stack) -> None:
    hop = Unavailable(stack.api.url)
    proc = subprocess.Popen([SNAPLEDGER, "--url", hop.url, "update-job", "-d", "prod", "db", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(stack))
    draining(stack)
    hop.on.set()
    # Until the CLI has met a 503 (a long poll in flight answers only when the
    # task moves), then a while longer: it retries with backoff meanwhile.
    assert hop.refused.wait(30), "the CLI sent nothing while the hop answered 503"
    time.sleep(1.0)
    hop.on.clear()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "snapledger unavailable (the event store is unreachable)" in err and "reconnected" in err
    assert " done at " in out
