"""The built-in local CPI of the embedded default: disks are directories.

Layout (internal names start with '.', which a valid CID never does)::

    disk_root/<disk_cid>/...                 a live disk
    snapshot_root/<snap_cid>/data/...        a snapshot's content (read-only files)
    snapshot_root/<snap_cid>/manifest.json   what was stored, and how
    snapshot_root/.latest/<disk_cid>         CID of the disk's newest snapshot
    snapshot_root/.tmp-*                     snapshots being built or deleted

The manifest sits beside ``data/`` rather than inside it so it can never clash
with a disk file nor leak into a restored disk, and so content and manifest
appear together in a single atomic rename.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from snapledger.domain.cpi import (CLOUD_ERROR, DISK_NOT_FOUND, NO_DISK_SPACE, VM_NOT_FOUND, CallLog, CallRecord,
                                   CpiError)
from snapledger.domain.json_types import JsonObject

from .local_copy import RESTORE_STAGE, DiskCopier
from .local_files import TMP_PREFIX, check_cid, hold, replace_content, rmtree, write_atomic
from .local_index import DATA, LATEST, MANIFEST, Manifest, SnapshotIndex

OPERATION_ID_KEY = "snapledger_operation_id"
_TMP = TMP_PREFIX
_STALE_TMP_S = 3600

P = ParamSpec("P")
# What the recorded calls answer (current_vm_id, get_disks, snapshot_disk, ...).
Answer = TypeVar("Answer", bound="str | list[str] | None")


def _recorded(method: Callable[Concatenate[LocalCpi, P], Answer]) -> Callable[Concatenate[LocalCpi, P], Answer]:
    """Leave a CallRecord in ``last_call``; turn OS errors into BOSH cloud errors."""

    @functools.wraps(method)
    def wrapper(self: LocalCpi, /, *args: P.args, **kwargs: P.kwargs) -> Answer:
        record = CallRecord(method=method.__name__, request_id=uuid.uuid4().hex)
        self._tls.record = record
        self._calls.add(record)
        start = time.monotonic()
        try:
            answer = method(self, *args, **kwargs)
            # A list[str] is not a JSON list to mypy (list is invariant): the record keeps a copy.
            record.answer = [*answer] if isinstance(answer, list) else answer
            return answer
        except OSError as e:
            kind = NO_DISK_SPACE if e.errno in (errno.ENOSPC, errno.EDQUOT) else CLOUD_ERROR
            err = CpiError(kind, f"{method.__name__} failed: {e}")
            record.log = err.message
            raise err from e
        except CpiError as e:
            record.log = e.message
            raise
        finally:
            record.duration_s = time.monotonic() - start

    return wrapper


class LocalCpi:
    name = "local"

    def __init__(self, disk_root: Path, snapshot_root: Path, *, vm_id: str | None = None,
                 self_disks: list[str] | None = None, host_disks: dict[str, Path] | None = None) -> None:
        """`self_disks`: disk CIDs (under disk_root) that `get_disks` reports for
        this host. `host_disks`: directories outside disk_root that are disks of
        this host too (by default the service's data directory), CID -> path;
        they are reported by `get_disks` as well."""
        self.disk_root = Path(disk_root)
        self.snapshot_root = Path(snapshot_root)
        self.disk_root.mkdir(parents=True, exist_ok=True)
        self.index = SnapshotIndex(self.snapshot_root)
        # Snapshots are copies of disks (files kept 0444 so they stay immutable):
        # the root is the service user's only, wherever it is configured.
        os.chmod(self.snapshot_root, 0o700)
        self._vm_id = vm_id
        self._host_disks = {check_cid(cid, "disk"): Path(path).resolve() for cid, path in (host_disks or {}).items()}
        self._self_disks = [check_cid(d, "disk") for d in self_disks or []] + list(self._host_disks)
        # Never copy our own disks and snapshots into a snapshot of a directory holding them.
        self.copier = DiskCopier(frozenset({self.disk_root.resolve(), self.snapshot_root.resolve()}))
        self._tls = threading.local()
        self._calls = CallLog()
        self._clean_stale_tmp()

    @property
    def last_call(self) -> CallRecord | None:
        return getattr(self._tls, "record", None)

    def take_calls(self) -> list[CallRecord]:
        """Every recorded call the current thread made since it last asked."""
        return self._calls.take()

    # -- CPI API --------------------------------------------------------------

    def info(self) -> JsonObject:
        return {"api_version": 2, "stemcell_formats": []}

    @_recorded
    def current_vm_id(self) -> str:
        return self._host_vm_id()

    def _host_vm_id(self) -> str:
        return self._vm_id or socket.gethostname()

    @_recorded
    def get_disks(self, vm_cid: str) -> list[str]:
        if vm_cid != self._host_vm_id():
            raise CpiError(VM_NOT_FOUND, f"VM {vm_cid!r:.80} not found")
        return list(self._self_disks)

    @_recorded
    def snapshot_disk(self, disk_cid: str, metadata: JsonObject) -> str:
        disk = self._disk_path(disk_cid)
        cid = self._snapshot_cid(metadata)
        if self.index.snap_dir(cid).is_dir():  # a retried call: the work is done
            self._remove_leftovers(cid)
            return self._existing(cid, disk_cid)
        self._remove_leftovers(cid)  # a killed earlier attempt's half copy
        started_ns = time.time_ns()
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{cid}-", dir=self.snapshot_root))
        held = hold(tmp)  # in use: _remove_leftovers leaves it alone until this process is gone
        try:
            files = self.copier.copy(disk, tmp / DATA, self.index.previous(disk_cid))
            manifest: Manifest = {
                "snapshot_cid": cid,
                "disk_cid": disk_cid,
                "metadata": metadata,
                "created_at": datetime.now(UTC).isoformat(),
                "created_at_ns": started_ns,
                "files": files,
            }
            write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str))
            try:
                os.rename(tmp, self.index.snap_dir(cid))
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                return self._existing(cid, disk_cid)  # a concurrent retry won the race
        finally:
            if tmp.exists():
                rmtree(tmp)
            os.close(held)
        self._tls.record.extra = {"snapshot_cid": cid, "files": len(files)}
        self.index.set_latest(disk_cid, cid, started_ns)
        return cid

    @_recorded
    def delete_snapshot(self, snapshot_cid: str) -> None:
        snap = self.index.snap_dir(check_cid(snapshot_cid, "snapshot"))
        trash = self.snapshot_root / f"{_TMP}{snapshot_cid}-deleted-{uuid.uuid4().hex[:8]}"
        try:
            held = hold(snap)  # the lock moves with the directory into the trash
        except FileNotFoundError:
            self._remove_leftovers(snapshot_cid)  # a killed earlier deletion's trash
            raise CpiError(DISK_NOT_FOUND, f"snapshot {snapshot_cid} not found") from None
        try:
            try:  # one rename makes the snapshot vanish; a crash leaves only a .tmp- dir
                os.rename(snap, trash)
            except FileNotFoundError:
                raise CpiError(DISK_NOT_FOUND, f"snapshot {snapshot_cid} not found") from None
            self.index.forget(snapshot_cid)
            rmtree(trash)
        finally:
            os.close(held)

    # -- helpers for tests, the tour and restore -------------------------------

    def ensure_disk(self, disk_cid: str) -> Path:
        """The disk's directory, made if missing (not BOSH's `create_disk`: the CID is the caller's)."""
        (self.disk_root / check_cid(disk_cid, "disk")).mkdir(exist_ok=True)
        return self._disk_path(disk_cid)

    def has_disk(self, disk_cid: str) -> bool:
        """BOSH's `has_disk`: whether the disk exists (anything at its path counts:
        a restore into a new disk must never write into something that is there)."""
        return disk_cid in self._host_disks or os.path.lexists(self.disk_root / check_cid(disk_cid, "disk"))

    def find_snapshot(self, disk_cid: str, metadata: JsonObject) -> str | None:
        """The snapshot an earlier `snapshot_disk` call with this metadata made,
        if it completed: how an in-doubt call is resolved without repeating it
        blindly (the CID is derived from the operation id in the metadata)."""
        if metadata.get(OPERATION_ID_KEY) is None:
            return None
        cid = self._snapshot_cid(metadata)
        self._remove_leftovers(cid)  # the in-doubt call's half copy, if it died mid-copy
        if not self.index.snap_dir(cid).is_dir():
            return None
        return self._existing(cid, disk_cid)

    def has_snapshot(self, snapshot_cid: str) -> bool:
        return self.index.snap_dir(check_cid(snapshot_cid, "snapshot")).is_dir()

    def snapshot_path(self, snapshot_cid: str) -> Path:
        """The snapshot's content (a copy of the disk directory)."""
        return self.index.data(snapshot_cid)

    @_recorded
    def restore_snapshot(self, snapshot_cid: str, disk_cid: str) -> None:
        """Replace the disk's content with the snapshot's, as new writable files."""
        manifest = self.index.manifest(snapshot_cid)
        if manifest is None:
            raise CpiError(DISK_NOT_FOUND, f"snapshot {snapshot_cid} not found")
        replace_content(self.ensure_disk(disk_cid), manifest["files"], self.snapshot_path(snapshot_cid),
                        stage_prefix=RESTORE_STAGE)

    # -- internals -------------------------------------------------------------

    def _disk_path(self, disk_cid: str) -> Path:
        if disk_cid in self._host_disks:
            host = self._host_disks[disk_cid]
            if not host.is_dir():
                raise CpiError(DISK_NOT_FOUND, f"disk {disk_cid} ({host}) not found")
            return host
        path = self.disk_root / check_cid(disk_cid, "disk")
        resolved, root = path.resolve(), self.disk_root.resolve()
        # A disk directory that is a symlink must not lead outside the root.
        if resolved == root or not resolved.is_relative_to(root):
            raise CpiError(CLOUD_ERROR, f"invalid disk cid {disk_cid!r:.80}: resolves outside {root}")
        if not resolved.is_dir():
            raise CpiError(DISK_NOT_FOUND, f"disk {disk_cid} not found")
        return resolved


    def _snapshot_cid(self, metadata: JsonObject) -> str:
        op = metadata.get(OPERATION_ID_KEY)
        # The operation id makes the CID deterministic, so a retry finds its snapshot.
        cid = f"snap-{op}" if op is not None else f"snap-{uuid.uuid4().hex}"
        return check_cid(cid, "snapshot")


    def _existing(self, cid: str, disk_cid: str) -> str:
        manifest = self.index.manifest(cid)
        if manifest is None or manifest.get("disk_cid") != disk_cid:
            raise CpiError(CLOUD_ERROR, f"snapshot {cid} already exists and is not of disk {disk_cid}")
        # The first attempt may have died between its rename and the index update.
        self.index.set_latest(disk_cid, cid, manifest.get("created_at_ns", 0))
        return cid





    def _remove_leftovers(self, cid: str) -> None:
        """Remove what killed calls for snapshot `cid` left (`.tmp-<cid>-*`: a half
        copy, a deletion's trash). Called when that snapshot's operation is
        resolved: repeated, or found in doubt. A directory a live call holds
        (its flock) is left alone: only a dead process's leftovers go."""
        # Exactly mkdtemp's and delete_snapshot's names: never another CID's (`snap-a` vs `snap-a-b`).
        ours = re.compile(rf"{re.escape(_TMP + cid)}-(?:deleted-[0-9a-f]{{8}}|[a-z0-9_]{{8}})")
        for entry in os.scandir(self.snapshot_root):
            if not (ours.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
                continue
            try:
                fd = hold(Path(entry.path), wait=False)
            except (BlockingIOError, FileNotFoundError):
                continue  # a live call's (a concurrent retry), or already gone
            try:
                rmtree(Path(entry.path))
            finally:
                os.close(fd)

    def _clean_stale_tmp(self) -> None:
        # Leftovers of a crash mid-copy or mid-delete; young ones may still be in use.
        # Another process on the same root (a second worker) may remove an entry
        # between the listing and its removal: gone is what we wanted, not a reason
        # to refuse the start (the chaos run lost a worker to it).
        cutoff = time.time() - _STALE_TMP_S
        for parent in (self.snapshot_root, self.snapshot_root / LATEST):
            for entry in os.scandir(parent):
                if not entry.name.startswith(_TMP):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        rmtree(Path(entry.path)) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
