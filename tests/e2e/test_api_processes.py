"""Several API processes on one port (`snapledger api --processes N`, decision 37):
real processes, real HTTP(S), PostgreSQL. Which process answered is read where
an operator reads it: the `pid` and `api_process` of each access-log line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.process import SNAPLEDGER, Server, free_port


def log_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for text in server.log.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


def wait_for_line(server: Server, event: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in log_lines(server) if line.get("event") == event]
        if found:
            return found[0]
        assert server.proc is not None
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} line: {server.log.read_text()[-3000:]}")


def start_two(tmp_path: Path, pg_url: str, tls: bool = False) -> tuple[Server, list[int]]:
    server = Server(tmp_path / "data", pg_url, command="api", tls=tls, extra_args=["--processes", "2"]).start()
    ready = wait_for_line(server, "api processes ready")
    assert ready["processes"] == 2 and len(set(ready["pids"])) == 2
    return server, ready["pids"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def get(server: Server, path: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One request on a connection of its own (the kernel picks the process per connection)."""
    request = urllib.request.Request(server.url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=10, context=server.ssl_context) as resp:
        return resp.status, json.loads(resp.read())


def answered_by(server: Server, path: str) -> set[int]:
    return {line["pid"] for line in log_lines(server) if line.get("event") == "request" and line.get("path") == path}


def test_both_processes_answer_on_one_port_each_as_one_api_process_would(tmp_path: Path, pg_url: str) -> None:
    server, pids = start_two(tmp_path, pg_url, tls=True)  # the default: HTTPS with the service's own CA
    try:
        # Native and bosh CLI dialect, on new connections, until each process answered both.
        for _ in range(200):
            status, native = get(server, "/health", {})
            assert status == 200 and native == {"status": "ok"}
            status, director = get(server, "/info", {"User-Agent": "Go-http-client/1.1"})
            assert status == 200 and director["user_authentication"]["type"] == "basic"
            if answered_by(server, "/health") == set(pids) and answered_by(server, "/info") == set(pids):
                break
        assert answered_by(server, "/health") == set(pids)
        assert answered_by(server, "/info") == set(pids)
        # A command accepted by either is the same ledger's: both processes' answers agree.
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["d-0"]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        accepted = [server.api("POST", "/deployments/prod/snapshots")["task_id"] for _ in range(6)]
        assert len(set(accepted)) == 6
    finally:
        server.stop()


def test_sigterm_stops_every_process_and_exits_0(tmp_path: Path, pg_url: str) -> None:
    server, pids = start_two(tmp_path, pg_url)
    assert server.proc is not None and all(alive(pid) for pid in pids)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.log.read_text()[-3000:]
    assert not any(alive(pid) for pid in pids)  # no orphans: each stopped and was reaped
    assert wait_for_line(server, "api processes stopped")["processes"] == 2


def test_a_child_killed_stops_the_others_and_the_parent_exits_non_zero(tmp_path: Path, pg_url: str) -> None:
    server, pids = start_two(tmp_path, pg_url)
    assert server.proc is not None
    os.kill(pids[1], signal.SIGKILL)
    assert server.proc.wait(30) == 1, server.log.read_text()[-3000:]
    died = wait_for_line(server, "api process exited unexpectedly; stopping the others (the supervisor restarts "
                                 "the unit)")
    assert died["level"] == "error" and died["pid"] == pids[1] and died["exit"] == "killed by SIGKILL"
    assert not alive(pids[0])


def run_api(tmp_path: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SNAPLEDGER_")}
    extra = []
    if config is not None:
        path = tmp_path / "snapledger.yml"
        path.write_text(config)
        extra = ["--config", str(path)]
    return subprocess.run([SNAPLEDGER, "api", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
                           "--plain-http", *extra, *args], capture_output=True, text=True, timeout=60,
                          env=environ, cwd=tmp_path)


@pytest.mark.parametrize("args,config,expected", [
    (["--processes", "0"], None, "Invalid value for '--processes': 0 is not in the range 1<=x<=64"),
    (["--processes", "x"], None, "Invalid value for '--processes': 'x' is not a valid integer range"),
    ([], "api: {processes: x}\n", "config key 'api.processes': expected an integer, got 'x'"),
    ([], "api: {processes: 65}\n", "config key 'api.processes': must be 1-64, got 65"),
    # SQLite (the default store): refused, not left to queue on one writer's lock.
    (["--processes", "2"], None, "several API processes need PostgreSQL"),
])
def test_bad_process_counts_are_refused_in_one_line(tmp_path: Path, args: list[str], config: str | None,
                                                     expected: str) -> None:
    result = run_api(tmp_path, *args, config=config)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and expected in result.stderr, result.stderr


def test_serve_multiplies_only_the_api_its_own_process_runs_the_other_roles(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-0").mkdir(parents=True)
    (data_dir / "disks" / "disk-0" / "f").write_text("orders")
    server = Server(data_dir, pg_url, command="serve", extra_args=["--processes", "2"]).start()
    try:
        ready = wait_for_line(server, "api processes ready")
        assert ready["processes"] == 2
        assert wait_for_line(server, "starting")["roles"] == "projector,scheduler,worker"
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        task = server.wait_task(server.api("POST", "/deployments/prod/snapshots")["task_id"])
        assert task["state"] == "done"  # accepted by an API process, taken by the parent's worker
    finally:
        server.stop()
    assert server.proc is not None and server.proc.returncode == 0
