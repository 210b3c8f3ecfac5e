#!/usr/bin/env python3
"""A test CPI executable speaking the real BOSH external CPI protocol.

Usage: ``fake_cpi.py <config.json>`` with the JSON request on stdin.

It mirrors the BOSH dummy CPI's on-disk layout under the configured ``dir``:
disks are files ``disks/<cid>``, snapshots are files ``snapshots/<cid>``
holding the snapshot metadata, and every request is appended as one JSON line
to ``cpi_inputs/all_requests`` (plus what the process saw of its environment
and the raw stdin, so tests can check what the caller really sent).

Config (re-read on every call so a test can change it between calls)::

    {"dir": "...", "api_version": 2, "vm_id": "vm-fake", "vm_disks": [],
     "faults": {"<method>": {"mode": "...", ...}}}

Fault modes: ``error`` (answer ``type``/``message``/``ok_to_retry``; ``times``
failures, then success; omitted = always), ``not_implemented``, ``garbage``,
``bad_schema`` (``variant``: ``missing_log`` | ``wrong_types``), ``hang``
(sleeps forever after spawning a ``sleep 1000`` child whose pid goes to
``<dir>/hang_child.pid``), ``exit_nonzero_ok`` (valid answer, exit code 3),
``unknown_error`` (type ``Foo::Bar``), ``result`` (succeed with ``value``
as the result, to feed the caller results of the wrong shape).

Standard library only: it runs under whatever interpreter the wrapper names.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

CLOUD_ERROR = "Bosh::Clouds::CloudError"
DISK_NOT_FOUND = "Bosh::Clouds::DiskNotFound"
NOT_IMPLEMENTED = "Bosh::Clouds::NotImplemented"


class CpiFailure(Exception):
    """An error answer of this CPI."""

    def __init__(self, type_: str, message: str, ok_to_retry: bool = False) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.ok_to_retry = ok_to_retry


# --- state layout ------------------------------------------------------------------


def state_path(config: dict[str, Any], *parts: str) -> Path:
    path = Path(config["dir"]).joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def record_request(config: dict[str, Any], raw: str, request: dict[str, Any]) -> None:
    entry = {
        "method_name": request.get("method"),
        "inputs": request.get("arguments"),
        "context": request.get("context"),
        "api_version": request.get("api_version"),
        "has_api_version": "api_version" in request,
        "raw": raw,
        "environ": environment_at_exec(),
        "pid": os.getpid(),
    }
    with state_path(config, "cpi_inputs", "all_requests").open("a") as f:
        f.write(json.dumps(entry) + "\n")


def environment_at_exec() -> dict[str, str]:
    # /proc/self/environ is what execve() received; os.environ may already hold
    # LC_CTYPE added by the interpreter's own locale coercion (PEP 538).
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


# --- CPI methods ---------------------------------------------------------------------


def new_cid() -> str:
    return secrets.token_hex(16)


def info(config: dict[str, Any], _args: list[Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"stemcell_formats": ["dummy"]}
    if config.get("api_version") is not None:  # null in the config = a CPI that predates api_version
        answer["api_version"] = config["api_version"]
    return answer


def create_disk(config: dict[str, Any], args: list[Any]) -> str:
    size, cloud_properties, vm_locality = args
    cid = new_cid()
    disk = {"size": size, "cloud_properties": cloud_properties, "vm_locality": vm_locality}
    state_path(config, "disks", cid).write_text(json.dumps(disk))
    return cid


def has_disk(config: dict[str, Any], args: list[Any]) -> bool:
    return state_path(config, "disks", args[0]).is_file()


def delete_disk(config: dict[str, Any], args: list[Any]) -> None:
    path = state_path(config, "disks", args[0])
    if not path.is_file():
        raise CpiFailure(DISK_NOT_FOUND, f"Disk '{args[0]}' not found")
    path.unlink()


def snapshot_disk(config: dict[str, Any], args: list[Any]) -> str:
    disk_id, metadata = args
    if not state_path(config, "disks", disk_id).is_file():
        raise CpiFailure(DISK_NOT_FOUND, f"Disk '{disk_id}' not found")
    cid = new_cid()
    state_path(config, "snapshots", cid).write_text(json.dumps(metadata))
    return cid


def delete_snapshot(config: dict[str, Any], args: list[Any]) -> None:
    path = state_path(config, "snapshots", args[0])
    if not path.is_file():
        raise CpiFailure(DISK_NOT_FOUND, f"Snapshot '{args[0]}' not found")
    path.unlink()


def current_vm_id(config: dict[str, Any], _args: list[Any]) -> str:
    return config.get("vm_id", "vm-fake")


def get_disks(config: dict[str, Any], _args: list[Any]) -> list[str]:
    return list(config.get("vm_disks", []))


METHODS: dict[str, Callable[[dict[str, Any], list[Any]], Any]] = {
    "info": info,
    "create_disk": create_disk,
    "has_disk": has_disk,
    "delete_disk": delete_disk,
    "snapshot_disk": snapshot_disk,
    "delete_snapshot": delete_snapshot,
    "current_vm_id": current_vm_id,
    "get_disks": get_disks,
}


# --- faults ----------------------------------------------------------------------------


def raw_output_fault(config: dict[str, Any], fault: dict[str, Any]) -> bool:
    """Act out faults that bypass a normal answer; True when stdout is done."""
    mode = fault.get("mode")
    if mode == "garbage":
        sys.stdout.write("<html>502 Bad Gateway</html> this is not JSON")
        return True
    if mode == "bad_schema":
        write_bad_schema(fault.get("variant", "missing_log"))
        return True
    if mode == "hang":
        hang(config)
    return False


def raise_error_fault(config: dict[str, Any], method: str, fault: dict[str, Any]) -> None:
    """Raise the error answer a fault asks for, if any."""
    mode = fault.get("mode")
    if mode == "error" and error_still_due(config, method, fault.get("times")):
        raise CpiFailure(
            fault.get("type", CLOUD_ERROR), fault.get("message", "fake failure"), fault.get("ok_to_retry", False)
        )
    if mode == "not_implemented":
        raise CpiFailure(NOT_IMPLEMENTED, f"Must implement method: {method}")
    if mode == "unknown_error":
        raise CpiFailure("Foo::Bar", fault.get("message", "something odd"))
    if mode not in (None, "error", "exit_nonzero_ok", "result"):
        raise SystemExit(f"fake_cpi: unknown fault mode {mode!r}")


def error_still_due(config: dict[str, Any], method: str, times: int | None) -> bool:
    # The counter lives in the state dir: every call is a fresh process.
    if times is None:
        return True
    counter = state_path(config, "fault_counters", method)
    failed = int(counter.read_text()) if counter.exists() else 0
    if failed >= times:
        return False
    counter.write_text(str(failed + 1))
    return True


def write_bad_schema(variant: str) -> None:
    if variant == "wrong_types":
        answer: dict[str, Any] = {
            "result": None,
            "error": {"type": CLOUD_ERROR, "message": "boom", "ok_to_retry": "yes"},
            "log": "",
        }
    else:  # missing_log
        answer = {"result": "snap-123", "error": None}
    sys.stdout.write(json.dumps(answer))


def hang(config: dict[str, Any]) -> None:
    # A grandchild in the same process group: the caller must kill the group,
    # not just this process, or `sleep` outlives the timeout.
    child = subprocess.Popen(["sleep", "1000"])
    state_path(config, "hang_child.pid").write_text(str(child.pid))
    state_path(config, "hang_parent.pid").write_text(str(os.getpid()))
    while True:
        time.sleep(60)


# --- protocol ------------------------------------------------------------------------------


def respond(result: Any = None, error: CpiFailure | None = None, log: str = "") -> None:
    body = None if error is None else {"type": error.type, "message": error.message, "ok_to_retry": error.ok_to_retry}
    sys.stdout.write(json.dumps({"result": result, "error": body, "log": log}))


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[1]).read_text())
    raw = sys.stdin.read()
    request = json.loads(raw)
    method = request.get("method", "")
    request_id = request.get("context", {}).get("request_id", "")
    record_request(config, raw, request)
    sys.stderr.write(f"fake_cpi: {method} {request_id}\n")
    sys.stderr.flush()  # so it survives a SIGKILL in hang mode
    log = f"fake_cpi log: {method} request_id={request_id}\n"

    fault = config.get("faults", {}).get(method) or {}
    if raw_output_fault(config, fault):
        return 0
    try:
        raise_error_fault(config, method, fault)
        handler = METHODS.get(method)
        if fault.get("mode") == "result":
            handler = lambda _config, _args: fault.get("value")  # noqa: E731
        if handler is None:
            # The legacy spelling real CPIs (bosh-cpi-ruby) use for unknown methods.
            raise CpiFailure("InvalidCall", f"Method is not known, got '{method}'")
        respond(result=handler(config, list(request.get("arguments", []))), log=log)
    except CpiFailure as failure:
        respond(error=failure, log=log)
    except Exception as e:
        respond(error=CpiFailure(CLOUD_ERROR, f"fake_cpi crashed: {e!r}"), log=log)
    # The protocol ignores exit codes; this mode proves the caller does too.
    return 3 if fault.get("mode") == "exit_nonzero_ok" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
