"""The local CPI's snapshot root read as an index: each snapshot's manifest,
and each disk's newest snapshot (``.latest/<disk_cid>``), which the next
snapshot of that disk hard-links its unchanged files against."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TypedDict

from snapledger.domain.json_types import JsonObject

from .local_files import CID_RE, FileEntry, check_cid, write_atomic

DATA, MANIFEST, LATEST = "data", "manifest.json", ".latest"
# The previous snapshot of a disk: (its data dir, its manifest entries by path).
Previous = tuple[Path, dict[str, FileEntry]] | None


class Manifest(TypedDict, total=False):
    """A snapshot's manifest.json, as LocalCpi.snapshot_disk writes it."""

    snapshot_cid: str
    disk_cid: str
    metadata: JsonObject
    created_at: str
    created_at_ns: int
    files: list[FileEntry]


class SnapshotIndex:
    def __init__(self, snapshot_root: Path) -> None:
        self.root = snapshot_root
        (self.root / LATEST).mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def snap_dir(self, cid: str) -> Path:
        return self.root / cid

    def data(self, cid: str) -> Path:
        """A snapshot's content (a copy of the disk directory)."""
        return self.snap_dir(check_cid(cid, "snapshot")) / DATA

    def manifest(self, cid: str) -> Manifest | None:
        try:
            with open(self.snap_dir(check_cid(cid, "snapshot")) / MANIFEST) as f:
                manifest: Manifest = json.load(f)  # ours, written by snapshot_disk
                return manifest
        except (OSError, ValueError):
            return None

    def previous(self, disk_cid: str) -> Previous:
        """The disk's latest snapshot; None means copy everything."""
        cid = self.read_latest(disk_cid)
        manifest = self.manifest(cid) if cid is not None else None
        if cid is None or manifest is None or manifest.get("disk_cid") != disk_cid:
            return None
        return self.data(cid), {e["path"]: e for e in manifest["files"]}

    def lock(self, disk_cid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(disk_cid, threading.Lock())

    def read_latest(self, disk_cid: str) -> str | None:
        try:
            cid = (self.root / LATEST / disk_cid).read_text().strip()
        except OSError:
            return None
        return cid if CID_RE.fullmatch(cid) else None

    def write_latest(self, disk_cid: str, cid: str | None) -> None:
        path = self.root / LATEST / disk_cid
        if cid is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, cid + "\n")

    def set_latest(self, disk_cid: str, cid: str, created_at_ns: int) -> None:
        with self.lock(disk_cid):
            current = self.read_latest(disk_cid)
            manifest = self.manifest(current) if current else None
            # Concurrent snapshots of one disk may finish out of order: keep the newest.
            if manifest is None or manifest.get("created_at_ns", 0) <= created_at_ns:
                self.write_latest(disk_cid, cid)

    def forget(self, snapshot_cid: str) -> None:
        """A deleted snapshot is nobody's latest any more: the disks it was latest of get their next newest."""
        for disk_cid in self._latest_pointing_at(snapshot_cid):
            with self.lock(disk_cid):
                if self.read_latest(disk_cid) == snapshot_cid:
                    self._recompute_latest(disk_cid)

    def _recompute_latest(self, disk_cid: str) -> None:
        newest: tuple[int, str] | None = None
        for name in os.listdir(self.root):
            if not CID_RE.fullmatch(name):  # .latest, .tmp-*, lost+found...
                continue
            m = self.manifest(name)
            if m and m.get("disk_cid") == disk_cid:
                newest = max(newest or (-1, ""), (m.get("created_at_ns", 0), name))
        self.write_latest(disk_cid, newest[1] if newest else None)

    def _latest_pointing_at(self, cid: str) -> list[str]:
        names = os.listdir(self.root / LATEST)
        return [d for d in names if not d.startswith(".") and self.read_latest(d) == cid]
