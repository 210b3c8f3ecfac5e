"""ExternalCpi against a real CPI process (tests/support/fake_cpi.py).

Nothing is mocked: every call spawns the fake CPI through a /bin/sh wrapper,
which records what it received in its state dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from snapledger.adapters.cpi.external import ExternalCpi
from snapledger.domain.cpi import (
    CLOUD_ERROR,
    DISK_NOT_FOUND,
    INVALID_RESPONSE,
    NOT_EXECUTABLE,
    NOT_IMPLEMENTED,
    NOT_SUPPORTED,
    TIMED_OUT,
    UNKNOWN_ERROR,
    CpiError,
)
from support.fake_cpi_helpers import (
    add_disk,
    make_fake_cpi,
    read_requests,
    set_faults,
    snapshot_file,
    wait_for_file,
    wait_until_gone,
)

DIRECTOR_UUID = "director-uuid-1234"
REQUEST_ID = re.compile(r"^cpi-\d{6}$")


def external_cpi(executable: Path, **kwargs: Any) -> ExternalCpi:
    kwargs.setdefault("director_uuid", DIRECTOR_UUID)
    return ExternalCpi("fake", executable, **kwargs)


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path]:
    return make_fake_cpi(tmp_path, vm_id="vm-42", vm_disks=["disk-a", "disk-b"])


@pytest.fixture
def cpi(fake: tuple[Path, Path]) -> ExternalCpi:
    return external_cpi(fake[0])


@pytest.fixture
def state(fake: tuple[Path, Path]) -> Path:
    return fake[1]


def methods_called(state_dir: Path) -> list[str]:
    return [r["method_name"] for r in read_requests(state_dir)]


def raises_cpi_error(call: Any, *args: Any) -> CpiError:
    with pytest.raises(CpiError) as caught:
        call(*args)
    return caught.value


# --- info and api_version -------------------------------------------------------------


def test_info_is_fetched_once_and_cached(cpi: ExternalCpi, state: Path) -> None:
    assert cpi.info() == {"api_version": 2, "stemcell_formats": ["dummy"]}
    cpi.current_vm_id()
    cpi.get_disks("vm-42")
    cpi.info()

    assert methods_called(state) == ["info", "current_vm_id", "get_disks"]


def test_concurrent_first_calls_fetch_info_once(cpi: ExternalCpi, state: Path) -> None:
    barrier = threading.Barrier(6)
    seen: dict[str, str | None] = {}

    def worker(i: int) -> None:
        barrier.wait()
        if i % 2:
            cpi.current_vm_id()
        else:
            cpi.get_disks("vm-42")
        # last_call is per thread: each must see its own call, not a neighbour's.
        record = cpi.last_call
        seen[f"{i}"] = record.method if record else None

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert methods_called(state).count("info") == 1
    assert seen == {f"{i}": "current_vm_id" if i % 2 else "get_disks" for i in range(6)}


def test_last_call_is_per_thread(cpi: ExternalCpi) -> None:
    # Interleave deterministically: the worker reads last_call only after the
    # main thread made a call of its own in between.
    worker_called, main_called = threading.Event(), threading.Event()
    seen: list[str | None] = []

    def worker() -> None:
        cpi.current_vm_id()
        worker_called.set()
        main_called.wait(timeout=30)
        seen.append(cpi.last_call.method if cpi.last_call else None)

    thread = threading.Thread(target=worker)
    thread.start()
    worker_called.wait(timeout=30)
    cpi.get_disks("vm-42")
    main_called.set()
    thread.join()

    assert seen == ["current_vm_id"]
    assert cpi.last_call.method == "get_disks"
    untouched: list[Any] = []
    idle = threading.Thread(target=lambda: untouched.append(cpi.last_call))
    idle.start()
    idle.join()
    assert untouched == [None]


def test_api_version_is_absent_on_info_and_sent_on_other_calls(cpi: ExternalCpi, state: Path) -> None:
    cpi.current_vm_id()
    cpi.snapshot_disk(add_disk(state), {})

    info_request, *others = read_requests(state)
    assert info_request["method_name"] == "info"
    assert info_request["has_api_version"] is False
    assert [(r["method_name"], r["api_version"]) for r in others] == [
        ("current_vm_id", 2),
        ("snapshot_disk", 2),
    ]


@pytest.mark.parametrize(
    ("cpi_version", "preferred", "sent"),
    [(3, 2, 2), (2, 5, 2), (4, 3, 3)],
)
def test_api_version_sent_is_the_lower_of_cpi_and_preferred(
    tmp_path: Path, cpi_version: int, preferred: int, sent: int
) -> None:
    executable, state_dir = make_fake_cpi(tmp_path, api_version=cpi_version)
    external_cpi(executable, preferred_api_version=preferred).current_vm_id()

    assert read_requests(state_dir)[-1]["api_version"] == sent


@pytest.mark.parametrize("cpi_version", [1, None])
def test_cpi_below_api_version_2_is_not_supported(tmp_path: Path, cpi_version: int | None) -> None:
    executable, state_dir = make_fake_cpi(tmp_path, api_version=cpi_version)
    cpi = external_cpi(executable)

    error = raises_cpi_error(cpi.snapshot_disk, add_disk(state_dir), {})
    assert error.type == NOT_SUPPORTED
    assert error.message == "CPI API version 1 is not supported. Minimum required version is 2."
    assert raises_cpi_error(cpi.info).type == NOT_SUPPORTED
    # The refusal happens before the CPI is asked to do anything.
    assert methods_called(state_dir) == ["info"]


def test_cpi_without_info_is_treated_as_version_1(tmp_path: Path) -> None:
    executable, _ = make_fake_cpi(tmp_path, faults={"info": {"mode": "not_implemented"}})

    assert raises_cpi_error(external_cpi(executable).current_vm_id).type == NOT_SUPPORTED


def test_failed_info_is_not_cached(tmp_path: Path) -> None:
    executable, state_dir = make_fake_cpi(
        tmp_path, faults={"info": {"mode": "error", "message": "API down", "ok_to_retry": True}}
    )
    cpi = external_cpi(executable)
    assert raises_cpi_error(cpi.current_vm_id).message == "API down"

    set_faults(state_dir, {})
    assert cpi.current_vm_id() == "vm-fake"
    assert methods_called(state_dir) == ["info", "info", "current_vm_id"]


# --- request and process environment ------------------------------------------------------


def test_context_carries_director_uuid_request_id_and_properties(fake: tuple[Path, Path]) -> None:
    executable, state_dir = fake
    cpi = external_cpi(executable, properties={"region": "eu-1", "api_key": "s3cr3t"})
    cpi.current_vm_id()

    request = read_requests(state_dir)[-1]
    context = request["context"]
    assert context["director_uuid"] == DIRECTOR_UUID
    assert REQUEST_ID.match(context["request_id"])
    assert context["request_id"] == cpi.last_call.request_id
    assert {k: context[k] for k in ("region", "api_key")} == {"region": "eu-1", "api_key": "s3cr3t"}


def test_request_ids_differ_between_calls(cpi: ExternalCpi, state: Path) -> None:
    for _ in range(3):
        cpi.current_vm_id()

    ids = [r["context"]["request_id"] for r in read_requests(state)]
    assert len(set(ids)) == len(ids) == 4


def test_request_is_bare_json_without_trailing_newline(cpi: ExternalCpi, state: Path) -> None:
    cpi.get_disks("vm-42")

    raw = read_requests(state)[-1]["raw"]
    assert not raw.endswith("\n")
    assert set(json.loads(raw)) == {"method", "arguments", "context", "api_version"}
    assert json.loads(raw)["arguments"] == ["vm-42"]


# The /bin/sh wrapper exports its own PWD; nothing else may reach the CPI.
SHELL_ADDED = {"PWD"}


def test_cpi_environment_is_minimal(
    cpi: ExternalCpi, state: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("HOME", "/home/operator")
    cpi.current_vm_id()

    for request in read_requests(state):
        environ = request["environ"]
        assert set(environ) - SHELL_ADDED == {"PATH", "TMPDIR", "HOME"}
        assert environ["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
        assert environ["TMPDIR"] == str(tmp_path)
        assert environ["HOME"] == "/home/operator"


def test_env_passthrough_adds_variables(fake: tuple[Path, Path]) -> None:
    executable, state_dir = fake
    external_cpi(executable, env_passthrough={"HTTPS_PROXY": "http://proxy:3128"}).current_vm_id()

    environ = read_requests(state_dir)[-1]["environ"]
    assert set(environ) - SHELL_ADDED == {"PATH", "TMPDIR", "HOME", "HTTPS_PROXY"}
    assert environ["HTTPS_PROXY"] == "http://proxy:3128"


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """structlog as it is unconfigured (every level), for this test only: another
    test of the same process may have configured an info-level filter, which drops
    the per-call debug lines before capture_logs sees them."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**saved)


def test_properties_never_reach_the_logs(fake: tuple[Path, Path], debug_logs: None) -> None:
    executable, _ = fake
    cpi = external_cpi(executable, properties={"api_key": "s3cr3t-value"})
    with capture_logs() as logs:
        cpi.current_vm_id()

    assert [e["method"] for e in logs] == ["info", "current_vm_id"]
    assert all(e["outcome"] == "ok" and REQUEST_ID.match(e["request_id"]) for e in logs)
    assert "s3cr3t-value" not in repr(logs)


# --- the snapshot methods ----------------------------------------------------------------------


def test_snapshot_disk_creates_snapshot_with_metadata(cpi: ExternalCpi, state: Path) -> None:
    disk = add_disk(state)
    metadata = {"deployment": "cf", "job": "database", "index": 0}

    snapshot = cpi.snapshot_disk(disk, metadata)

    assert snapshot
    assert json.loads(snapshot_file(state, snapshot).read_text()) == metadata
    assert read_requests(state)[-1]["inputs"] == [disk, metadata]


def test_delete_snapshot_removes_it(cpi: ExternalCpi, state: Path) -> None:
    snapshot = cpi.snapshot_disk(add_disk(state), {})

    assert cpi.delete_snapshot(snapshot) is None
    assert not snapshot_file(state, snapshot).exists()


def test_delete_missing_snapshot_is_disk_not_found(cpi: ExternalCpi) -> None:
    error = raises_cpi_error(cpi.delete_snapshot, "no-such-snapshot")

    assert error.type == DISK_NOT_FOUND
    assert "no-such-snapshot" in error.message
    assert not error.is_not_implemented


def test_snapshot_of_missing_disk_is_disk_not_found(cpi: ExternalCpi) -> None:
    assert raises_cpi_error(cpi.snapshot_disk, "no-such-disk", {}).type == DISK_NOT_FOUND


def test_create_disk_current_vm_id_and_get_disks(cpi: ExternalCpi, state: Path) -> None:
    disk = cpi.create_disk(2048, {"type": "ssd"}, "vm-42")

    stored = json.loads((state / "disks" / disk).read_text())
    assert stored == {"size": 2048, "cloud_properties": {"type": "ssd"}, "vm_locality": "vm-42"}
    assert cpi.current_vm_id() == "vm-42"
    assert cpi.get_disks("vm-42") == ["disk-a", "disk-b"]


def test_generic_call_returns_raw_result(cpi: ExternalCpi, state: Path) -> None:
    disk = add_disk(state)

    assert cpi.call("has_disk", [disk]) is True
    assert cpi.call("has_disk", ["missing"]) is False
    assert cpi.call("info", []) == {"api_version": 2, "stemcell_formats": ["dummy"]}


@pytest.mark.parametrize(
    ("method", "value", "call"),
    [
        ("snapshot_disk", "", lambda cpi: cpi.snapshot_disk("disk", {})),
        ("snapshot_disk", None, lambda cpi: cpi.snapshot_disk("disk", {})),
        ("snapshot_disk", 17, lambda cpi: cpi.snapshot_disk("disk", {})),
        ("get_disks", "disk-a", lambda cpi: cpi.get_disks("vm")),
        ("get_disks", ["disk-a", 2], lambda cpi: cpi.get_disks("vm")),
        ("current_vm_id", None, lambda cpi: cpi.current_vm_id()),
    ],
)
def test_results_of_the_wrong_shape_are_invalid_responses(
    tmp_path: Path, method: str, value: Any, call: Any
) -> None:
    executable, _ = make_fake_cpi(tmp_path, faults={method: {"mode": "result", "value": value}})
    cpi = external_cpi(executable)

    error = raises_cpi_error(call, cpi)
    assert error.type == INVALID_RESPONSE
    assert error.message.startswith(f"Invalid CPI response - '{method}' result must be")
    assert "stdout: {" in error.message
    assert cpi.last_call.extra["stdout"].startswith("{")


# --- error answers ---------------------------------------------------------------------------------


def test_not_implemented_answer(tmp_path: Path) -> None:
    executable, _ = make_fake_cpi(tmp_path, faults={"snapshot_disk": {"mode": "not_implemented"}})

    error = raises_cpi_error(external_cpi(executable).snapshot_disk, "disk", {})
    assert error.type == NOT_IMPLEMENTED
    assert error.is_not_implemented


def test_unknown_method_legacy_invalid_call_is_not_implemented(cpi: ExternalCpi) -> None:
    error = raises_cpi_error(cpi.call, "calculate_snapshot_price", [])

    assert error.type == "InvalidCall"
    assert error.message == "Method is not known, got 'calculate_snapshot_price'"
    assert error.is_not_implemented


def test_legacy_cloud_error_invalid_method_is_not_implemented(tmp_path: Path) -> None:
    fault = {"mode": "error", "type": CLOUD_ERROR, "message": "Invalid Method: snapshot_disk"}
    executable, _ = make_fake_cpi(tmp_path, faults={"snapshot_disk": fault})

    error = raises_cpi_error(external_cpi(executable).snapshot_disk, "disk", {})
    assert error.type == CLOUD_ERROR
    assert error.is_not_implemented


@pytest.mark.parametrize("ok_to_retry", [True, False])
def test_known_error_keeps_type_message_and_retry_flag(tmp_path: Path, ok_to_retry: bool) -> None:
    fault = {"mode": "error", "type": CLOUD_ERROR, "message": "quota exceeded", "ok_to_retry": ok_to_retry}
    executable, _ = make_fake_cpi(tmp_path, faults={"snapshot_disk": fault})

    error = raises_cpi_error(external_cpi(executable).snapshot_disk, "disk", {})
    assert (error.type, error.message, error.ok_to_retry) == (CLOUD_ERROR, "quota exceeded", ok_to_retry)
    assert not error.is_not_implemented


def test_error_fault_with_times_recovers(tmp_path: Path) -> None:
    fault = {"mode": "error", "type": CLOUD_ERROR, "message": "throttled", "ok_to_retry": True, "times": 2}
    executable, state_dir = make_fake_cpi(tmp_path, faults={"snapshot_disk": fault})
    cpi = external_cpi(executable)
    disk = add_disk(state_dir)

    for _ in range(2):
        assert raises_cpi_error(cpi.snapshot_disk, disk, {}).ok_to_retry
    assert snapshot_file(state_dir, cpi.snapshot_disk(disk, {})).exists()


def test_unknown_error_type(tmp_path: Path) -> None:
    executable, _ = make_fake_cpi(tmp_path, faults={"delete_snapshot": {"mode": "unknown_error", "message": "odd"}})
    cpi = external_cpi(executable)

    error = raises_cpi_error(cpi.delete_snapshot, "snap")
    assert error.type == UNKNOWN_ERROR
    assert error.message == (
        "Unknown CPI error 'Foo::Bar' with message 'odd' in 'delete_snapshot' CPI method "
        f"(CPI request ID: '{cpi.last_call.request_id}')"
    )


# --- broken CPIs --------------------------------------------------------------------------------------


def test_garbage_output_is_invalid_response(tmp_path: Path) -> None:
    executable, _ = make_fake_cpi(tmp_path, faults={"snapshot_disk": {"mode": "garbage"}})
    cpi = external_cpi(executable)

    error = raises_cpi_error(cpi.snapshot_disk, "disk", {})
    assert error.type == INVALID_RESPONSE
    assert error.message.startswith("Invalid CPI response - ")
    assert error.message.endswith("; stdout: <html>502 Bad Gateway</html> this is not JSON")
    assert cpi.last_call.extra["stdout"] == "<html>502 Bad Gateway</html> this is not JSON"


@pytest.mark.parametrize(("variant", "problem"), [("missing_log", "'log'"), ("wrong_types", "ok_to_retry")])
def test_bad_schema_is_invalid_response(tmp_path: Path, variant: str, problem: str) -> None:
    executable, _ = make_fake_cpi(tmp_path, faults={"snapshot_disk": {"mode": "bad_schema", "variant": variant}})
    cpi = external_cpi(executable)

    error = raises_cpi_error(cpi.snapshot_disk, "disk", {})
    assert error.type == INVALID_RESPONSE
    assert problem in error.message.split("; stdout:")[0]
    assert "; stdout: {" in error.message
    assert cpi.last_call.extra["stdout"].startswith("{")


def test_valid_response_with_nonzero_exit_code_is_a_success(tmp_path: Path) -> None:
    executable, state_dir = make_fake_cpi(tmp_path, faults={"snapshot_disk": {"mode": "exit_nonzero_ok"}})
    cpi = external_cpi(executable)

    snapshot = cpi.snapshot_disk(add_disk(state_dir), {"a": 1})

    assert snapshot_file(state_dir, snapshot).exists()
    assert cpi.last_call.extra == {"exit_code": 3}


def test_missing_executable(tmp_path: Path) -> None:
    path = tmp_path / "no-such-cpi"
    cpi = external_cpi(path)

    error = raises_cpi_error(cpi.current_vm_id)
    assert error.type == NOT_EXECUTABLE
    assert error.message == f"Failed to run cpi: '{path}' is not executable"
    assert cpi.last_call is not None and cpi.last_call.method == "info"


def test_file_without_execute_bit(fake: tuple[Path, Path]) -> None:
    executable, _ = fake
    executable.chmod(0o644)

    error = raises_cpi_error(external_cpi(executable).current_vm_id)
    assert (error.type, error.message) == (NOT_EXECUTABLE, f"Failed to run cpi: '{executable}' is not executable")


def test_hanging_cpi_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    executable, state_dir = make_fake_cpi(tmp_path, faults={"snapshot_disk": {"mode": "hang"}})
    cpi = external_cpi(executable, timeout_s=1)
    cpi.info()  # keep the info process out of the timing

    started = time.monotonic()
    error = raises_cpi_error(cpi.snapshot_disk, "disk", {})
    elapsed = time.monotonic() - started

    assert error.type == TIMED_OUT
    assert error.message == f"CPI 'snapshot_disk' timed out after 1s (CPI request ID: '{cpi.last_call.request_id}')"
    assert elapsed < 3
    child = int(wait_for_file(state_dir / "hang_child.pid"))
    parent = int(wait_for_file(state_dir / "hang_parent.pid"))
    assert wait_until_gone(child), f"the CPI's child `sleep` ({child}) survived the timeout"
    assert wait_until_gone(parent)
    assert cpi.last_call.extra["exit_code"] == -9
    assert "fake_cpi: snapshot_disk" in cpi.last_call.stderr


# Issue 16 item 8: what a CPI starts never outlives its call, nor holds its answer back.
CPI_WITH_HELPERS = """#!/bin/sh
request=$(cat)
case "$request" in *'"method": "info"'*) echo '{"result": {"api_version": 2}, "error": null, "log": ""}'; exit 0 ;; esac
# A helper in a session of its own: killing the CPI's process group misses it.
setsid sh -c 'echo $$ > {dir}/setsid.pid; exec sleep 1000' </dev/null >/dev/null 2>&1 &
# A helper that inherits stdout and keeps it open after the CPI exited.
sleep 1000 &
echo $! > {dir}/holder.pid
while [ ! -s {dir}/setsid.pid ]; do sleep 0.01; done
echo '{"result": "snap-1", "error": null, "log": "answered"}'
"""


def test_the_answer_is_taken_when_the_cpi_exits_and_its_helpers_are_killed(tmp_path: Path) -> None:
    executable = tmp_path / "cpi"
    executable.write_text(CPI_WITH_HELPERS.replace("{dir}", str(tmp_path)))
    executable.chmod(0o755)
    cpi = external_cpi(executable, timeout_s=20)
    # The grandchild holding stdout does not make the valid answer a time-out.
    assert cpi.snapshot_disk("disk", {}) == "snap-1"
    assert cpi.last_call.log == "answered" and cpi.last_call.extra["exit_code"] == 0
    holder = int(wait_for_file(tmp_path / "holder.pid"))
    escaped = int(wait_for_file(tmp_path / "setsid.pid"))
    assert wait_until_gone(holder), f"the helper holding stdout ({holder}) outlived the call"
    assert wait_until_gone(escaped), f"the helper that called setsid() ({escaped}) outlived the call"


def test_a_timed_out_cpi_leaves_no_setsid_helper_behind(tmp_path: Path) -> None:
    executable = tmp_path / "cpi"
    executable.write_text(CPI_WITH_HELPERS.replace("{dir}", str(tmp_path)).replace(
        "echo '{\"result\": \"snap-1\"", "sleep 1000; echo '{\"result\": \"snap-1\""))
    executable.chmod(0o755)
    cpi = external_cpi(executable, timeout_s=2)
    error = raises_cpi_error(cpi.snapshot_disk, "disk", {})
    assert error.type == TIMED_OUT
    for name in ("holder.pid", "setsid.pid"):
        pid = int(wait_for_file(tmp_path / name))
        assert wait_until_gone(pid), f"{name}: {pid} outlived the timed-out call"


# A CPI that leaves a chain of helpers, each in a session of its own and each the
# parent of the next: a helper becomes the reaper's only once its parent is gone, so
# the reaper must wait for each death (level by level), not give up after a number
# of quick rounds (it did: helpers outlived the call under init on a loaded host).
CPI_WITH_A_CHAIN_OF_HELPERS = """#!/bin/sh
n=${1:-0}
if [ "$n" -eq 0 ]; then
  case "$(cat)" in *'"method": "info"'*) echo '{"result": {"api_version": 2}, "error": null, "log": ""}'; exit 0;; esac
fi
if [ "$n" -lt {depth} ]; then setsid "$0" $((n + 1)) </dev/null >/dev/null 2>&1 & fi
if [ "$n" -gt 0 ]; then echo $$ >> {dir}/chain.pids; [ "$n" -eq {depth} ] && touch {dir}/chain.done; exec sleep 60; fi
while [ ! -e {dir}/chain.done ]; do sleep 0.05; done
echo '{"result": "snap-1", "error": null, "log": ""}'
"""


def test_a_chain_of_setsid_helpers_is_killed_to_its_end(tmp_path: Path) -> None:
    depth = 300
    executable = tmp_path / "cpi"
    executable.write_text(CPI_WITH_A_CHAIN_OF_HELPERS.replace("{dir}", str(tmp_path)).replace("{depth}", str(depth)))
    executable.chmod(0o755)
    cpi = external_cpi(executable, timeout_s=60)
    assert cpi.snapshot_disk("disk", {}) == "snap-1"
    pids = [int(line) for line in (tmp_path / "chain.pids").read_text().split()]
    assert len(pids) == depth
    left = [pid for pid in pids if not wait_until_gone(pid, timeout_s=0.5)]
    for pid in left:  # leave nothing behind either way
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of {depth} helpers outlived the call"


# --- what the caller can store ------------------------------------------------------------------------


def test_last_call_records_log_stderr_and_exit_code(cpi: ExternalCpi) -> None:
    assert cpi.last_call is None
    cpi.current_vm_id()

    record = cpi.last_call
    assert record.method == "current_vm_id"
    assert REQUEST_ID.match(record.request_id)
    assert record.log == f"fake_cpi log: current_vm_id request_id={record.request_id}\n"
    assert record.stderr == f"fake_cpi: current_vm_id {record.request_id}\n"
    assert record.duration_s > 0
    assert record.extra == {"exit_code": 0}


def test_error_carries_log_and_stderr(cpi: ExternalCpi) -> None:
    error = raises_cpi_error(cpi.delete_snapshot, "missing")

    record = cpi.last_call
    assert record.method == "delete_snapshot"
    assert f"fake_cpi log: delete_snapshot request_id={record.request_id}" in error.log
    assert f"fake_cpi: delete_snapshot {record.request_id}" in error.log
    assert record.log and record.stderr
