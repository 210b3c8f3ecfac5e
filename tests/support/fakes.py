"""Fakes at the IaaS boundary only: an in-memory CPI that counts calls and fails on demand."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from snapledger.domain.cpi import DISK_NOT_FOUND, CpiError


class FakeCpi:
    name = "local"

    def __init__(self, disks: set[str] | None = None, delay_s: float = 0.0) -> None:
        self.disks = set(disks or ())
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.failures: dict[str, CpiError] = {}  # disk cid or snapshot cid -> error to raise
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"api_version": 2}

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any]) -> str:
        with self._lock:
            self.calls.append(("snapshot_disk", (disk_cid, dict(metadata))))
        time.sleep(self.delay_s)
        if disk_cid in self.failures:
            raise self.failures[disk_cid]
        if disk_cid not in self.disks:
            raise CpiError(DISK_NOT_FOUND, f"disk {disk_cid} not found")
        cid = f"snap-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.snapshots[cid] = {"disk": disk_cid, "metadata": dict(metadata)}
        return cid

    def delete_snapshot(self, snapshot_cid: str) -> None:
        with self._lock:
            self.calls.append(("delete_snapshot", (snapshot_cid,)))
        if snapshot_cid in self.failures:
            raise self.failures[snapshot_cid]
        with self._lock:
            if self.snapshots.pop(snapshot_cid, None) is None:
                raise CpiError(DISK_NOT_FOUND, f"snapshot {snapshot_cid} not found")

    def current_vm_id(self) -> str:
        return "vm-1"

    def get_disks(self, vm_cid: str) -> list[str]:
        return []

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)
