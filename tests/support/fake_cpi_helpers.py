"""Build and inspect a fake CPI (``tests/support/fake_cpi.py``) for a test.

Usage::

    executable, state = make_fake_cpi(tmp_path, faults={"snapshot_disk": {"mode": "hang"}})
    cpi = ExternalCpi("fake", executable, director_uuid="uuid-1")
    disk = add_disk(state)
    ...
    set_faults(state, {})           # takes effect on the next call
    requests = read_requests(state)  # one dict per CPI process run

Layout under ``tmp_path/<name>/``: ``cpi`` (the executable), ``state/``
(the CPI's dummy-style state dir, also holding ``config.json``).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import stat
import sys
import time
from pathlib import Path
from typing import Any

FAKE_CPI = Path(__file__).with_name("fake_cpi.py")


def make_fake_cpi(
    tmp_path: Path, faults: dict[str, Any] | None = None, *, name: str = "fake_cpi", **config: Any
) -> tuple[Path, Path]:
    """Create a fake CPI executable; returns ``(executable_path, state_dir)``.

    ``config`` keys go into the CPI's config (``api_version``, ``vm_id``,
    ``vm_disks``); ``name`` lets one test build several CPIs.
    """
    root = tmp_path / name
    state_dir = root / "state"
    state_dir.mkdir(parents=True)
    _write_config(state_dir, {"dir": str(state_dir), "api_version": 2, **config, "faults": faults or {}})
    return _write_wrapper(root / "cpi", state_dir / "config.json"), state_dir


def _write_wrapper(path: Path, config_path: Path) -> Path:
    # The CPI runs with PATH=/usr/sbin:/usr/bin:/sbin:/bin only, so the wrapper
    # names the test interpreter by absolute path instead of relying on PATH.
    command = " ".join(shlex.quote(str(p)) for p in (sys.executable, FAKE_CPI, config_path))
    path.write_text(f"#!/bin/sh\nexec {command}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _config_path(state_dir: Path) -> Path:
    return state_dir / "config.json"


def _write_config(state_dir: Path, config: dict[str, Any]) -> None:
    # Write-then-rename: a CPI process started concurrently never reads half a file.
    tmp = state_dir / "config.json.tmp"
    tmp.write_text(json.dumps(config))
    os.replace(tmp, _config_path(state_dir))


def update_config(state_dir: Path, **changes: Any) -> None:
    """Change the fake CPI's config; applies from its next call."""
    config = json.loads(_config_path(state_dir).read_text())
    config.update(changes)
    _write_config(state_dir, config)


def set_faults(state_dir: Path, faults: dict[str, Any]) -> None:
    """Replace the configured faults (and reset ``times`` counters)."""
    update_config(state_dir, faults=faults)
    counters = state_dir / "fault_counters"
    if counters.is_dir():
        for counter in counters.iterdir():
            counter.unlink()


def add_disk(state_dir: Path, cid: str | None = None) -> str:
    """Create a disk the way the fake CPI's ``create_disk`` would, without a call."""
    cid = cid or secrets.token_hex(16)
    disks = state_dir / "disks"
    disks.mkdir(exist_ok=True)
    (disks / cid).write_text(json.dumps({"size": 1024, "cloud_properties": {}, "vm_locality": None}))
    return cid


def read_requests(state_dir: Path) -> list[dict[str, Any]]:
    """Every request the fake CPI received, oldest first."""
    log = state_dir / "cpi_inputs" / "all_requests"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def snapshot_file(state_dir: Path, snapshot_cid: str) -> Path:
    return state_dir / "snapshots" / snapshot_cid


def wait_for_file(path: Path, timeout_s: float = 5.0) -> str:
    """The content of ``path`` once it exists and is non-empty."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text()):
            return text
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout_s}s")


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs.

    A killed orphan stays a zombie until init reaps it (seconds, on some
    container inits); it no longer runs, so that counts as gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


def wait_until_gone(pid: int, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.05)
    return process_gone(pid)
