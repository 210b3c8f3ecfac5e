"""The CPI call record, through a real `snapledger serve` with an external CPI
(a real executable speaking the BOSH protocol) and the CLI: every call under
its own method and request id, `info` included, where the task that caused it
shows it; a self snapshot's `current_vm_id` and `get_disks` each their own
entry; a multi-line CPI error shown once, trimmed, in `task N`, in full in
`task N --cpi`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from support.fake_cpi_helpers import add_disk, make_fake_cpi, read_requests, set_faults, update_config
from support.process import Server, cli

BACKTRACE = "\n".join(["Credentials rejected by the IaaS"] + [
    f"    from /var/vcap/packages/cpi/lib/cloud/step_{n}.rb:{n * 10}:in `call'" for n in range(1, 9)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, list[str]]]:
    root = tmp_path_factory.mktemp("cpi-record")
    executable, state = make_fake_cpi(root)
    disks = [add_disk(state), add_disk(state)]
    update_config(state, vm_id="vm-host-1", vm_disks=[disks[1]])
    config = root / "snapledger.yml"
    config.write_text(json.dumps({"cpis": {"aws": {"type": "external", "executable": str(executable),
                                                   "timeout": 20, "retry": {"attempts": 1}}},
                                  "default_cpi": "aws"}))
    server = Server(root / ".snapledger", env={"SNAPLEDGER_CONFIG": str(config)}).start()
    server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": [disks[0]]}]})
    server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
    yield server, state, disks
    server.stop()


def requests_since(state: Path, seen: int) -> list[dict[str, Any]]:
    return read_requests(state)[seen:]


def run(server: Server, *args: str) -> tuple[int, str, str]:
    """A CLI command that starts and follows a task: exit code, output, task id."""
    result = cli(server.url, *args)
    task_id = result.stdout.splitlines()[0].split()[-1]
    return result.returncode, result.stdout, task_id


def test_a_failed_info_is_recorded_as_info_and_shown_once(setup: tuple[Server, Path, list[str]]) -> None:
    server, state, disks = setup
    set_faults(state, {"info": {"mode": "error", "message": BACKTRACE, "times": 1}})
    seen = len(read_requests(state))
    code, out, task_id = run(server, "take-snapshot", "-d", "prod")
    assert code == 1
    [info] = requests_since(state, seen)  # the CPI was asked `info` and nothing else
    assert info["method_name"] == "info"
    request_id = info["context"]["request_id"]
    [entry] = server.api("GET", f"/tasks/{task_id}/cpi-log")
    assert entry["method"] == "info" and entry["request_id"] == request_id
    assert entry["error"]["type"] == "Bosh::Clouds::CloudError" and entry["error"]["message"] == BACKTRACE
    assert entry["log"] == f"fake_cpi log: info request_id={request_id}\n"
    assert entry["duration_s"] > 0
    # The task's output: the error once with the start of its backtrace, never all of it.
    assert out.count("Credentials rejected by the IaaS") >= 1
    assert out.count("step_1.rb") == 1 and "step_8.rb" not in out, out
    assert f"snapledger task {task_id} --cpi" in out
    full = cli(server.url, "task", task_id, "--cpi")
    assert full.returncode == 0
    assert f"aws info request {request_id}" in full.stdout and "step_8.rb" in full.stdout
    assert f"log: fake_cpi log: info request_id={request_id}" in full.stdout
    assert "snapshot_disk" not in full.stdout  # it never ran

    # The next task asks `info` again (a failed answer is not kept), in its own log.
    seen = len(read_requests(state))
    code, out, task_id = run(server, "take-snapshot", "-d", "prod")
    assert code == 0, out
    sent = requests_since(state, seen)
    assert [r["method_name"] for r in sent] == ["info", "snapshot_disk"]
    log = server.api("GET", f"/tasks/{task_id}/cpi-log")
    assert [(e["method"], e["request_id"]) for e in log] == [(r["method_name"], r["context"]["request_id"])
                                                            for r in sent]
    assert log[0]["answer"] == {"api_version": 2, "stemcell_formats": ["dummy"]} and log[0]["error"] is None
    for e in log:
        assert e["log"] == f"fake_cpi log: {e['method']} request_id={e['request_id']}\n"


def test_self_snapshot_records_current_vm_id_and_get_disks(setup: tuple[Server, Path, list[str]]) -> None:
    server, state, disks = setup
    set_faults(state, {})
    seen = len(read_requests(state))
    code, out, task_id = run(server, "take-snapshot", "--self")
    assert code == 0, out
    sent = requests_since(state, seen)
    assert [r["method_name"] for r in sent] == ["current_vm_id", "get_disks", "snapshot_disk"]
    log = server.api("GET", f"/tasks/{task_id}/cpi-log")
    assert [(e["method"], e["request_id"]) for e in log] == [(r["method_name"], r["context"]["request_id"])
                                                            for r in sent]
    for e in log:
        assert e["log"] == f"fake_cpi log: {e['method']} request_id={e['request_id']}\n"
        assert e["duration_s"] > 0 and e["error"] is None
    assert log[0]["answer"] == "vm-host-1" and log[1]["answer"] == [disks[1]]
    assert "disk None" not in out and "self: discovered" in out, out

    # A failing current_vm_id: its own entry, and the output names no disk that does not exist.
    set_faults(state, {"current_vm_id": {"mode": "error", "message": BACKTRACE}})
    seen = len(read_requests(state))
    code, out, task_id = run(server, "take-snapshot", "--self")
    assert code == 1
    [sent] = requests_since(state, seen)
    [entry] = server.api("GET", f"/tasks/{task_id}/cpi-log")
    assert entry["method"] == "current_vm_id" and entry["request_id"] == sent["context"]["request_id"]
    assert entry["error"]["message"] == BACKTRACE
    assert "disk None" not in out and "self: failed (Bosh::Clouds::CloudError: Credentials rejected" in out, out
    assert "step_8.rb" not in out
