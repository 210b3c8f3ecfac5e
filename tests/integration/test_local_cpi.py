"""LocalCpi against a real filesystem (tmp_path): disks are directories."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from snapledger.adapters.cpi import local, local_files
from snapledger.adapters.cpi.local import LocalCpi
from snapledger.domain.cpi import CLOUD_ERROR, DISK_NOT_FOUND, NO_DISK_SPACE, VM_NOT_FOUND, CpiError

HOUR_AGO_NS = time.time_ns() - 3600 * 10**9


@pytest.fixture
def cpi(tmp_path: Path) -> LocalCpi:
    return LocalCpi(tmp_path / "disks", tmp_path / "snaps", vm_id="vm-1", self_disks=["disk-a", "disk-b"])


def write(path: Path, data: bytes | str, *, aged: bool = True, mode: int = 0o644) -> Path:
    """Write a file; `aged` backdates it so it is eligible for hard-linking (not racily fresh)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    if aged:
        os.utime(path, ns=(HOUR_AGO_NS, HOUR_AGO_NS))
    return path


def rewrite_in_place(path: Path, data: bytes) -> None:
    # 'r+' keeps the inode: exactly what would corrupt a snapshot hard-linked to it.
    with open(path, "r+b") as f:
        f.write(data)


def digest(root: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def manifest(cpi: LocalCpi, cid: str) -> dict:
    return json.loads((cpi.snapshot_root / cid / "manifest.json").read_text())


def stored(cpi: LocalCpi, cid: str, rel: str) -> str:
    return next(e["stored"] for e in manifest(cpi, cid)["files"] if e["path"] == rel)


def latest(cpi: LocalCpi, disk: str) -> str | None:
    p = cpi.snapshot_root / ".latest" / disk
    return p.read_text().strip() if p.exists() else None


def snapshot_dirs(cpi: LocalCpi) -> list[str]:
    return sorted(n for n in os.listdir(cpi.snapshot_root) if n != ".latest")


@pytest.fixture
def disk(cpi: LocalCpi) -> Path:
    d = cpi.ensure_disk("disk-a")
    write(d / "db.bin", os.urandom(100_000))
    write(d / "conf" / "app.yml", "a: 1\n")
    write(d / "conf" / "deep" / "run.sh", "#!/bin/sh\n", mode=0o755)
    return d


# -- snapshot content -------------------------------------------------------------


def test_snapshot_is_an_equal_read_only_copy_with_manifest_outside_content(cpi: LocalCpi, disk: Path) -> None:
    cid = cpi.snapshot_disk("disk-a", {"deployment": "d1"})
    data = cpi.snapshot_path(cid)
    assert digest(data) == digest(disk)
    assert "manifest.json" not in os.listdir(data)
    for rel in ("db.bin", "conf/app.yml", "conf/deep/run.sh"):
        assert stat.S_IMODE((data / rel).stat().st_mode) == 0o444
        assert (data / rel).stat().st_ino != (disk / rel).stat().st_ino
        assert (data / rel).stat().st_mtime_ns == (disk / rel).stat().st_mtime_ns
        assert stored(cpi, cid, rel) in ("copy", "reflink")
    m = manifest(cpi, cid)
    assert m["disk_cid"] == "disk-a" and m["metadata"] == {"deployment": "d1"} and m["created_at"]
    run = next(e for e in m["files"] if e["path"] == "conf/deep/run.sh")
    assert (run["mode"], run["size"]) == (0o755, len("#!/bin/sh\n"))
    assert latest(cpi, "disk-a") == cid
    assert cpi.has_snapshot(cid) and cid.startswith("snap-")


def test_live_change_after_snapshot_does_not_change_copied_file(cpi: LocalCpi, disk: Path) -> None:
    cid = cpi.snapshot_disk("disk-a", {})
    rewrite_in_place(disk / "conf" / "app.yml", b"b: 2\n")
    assert (cpi.snapshot_path(cid) / "conf" / "app.yml").read_text() == "a: 1\n"


def test_unchanged_file_is_hard_linked_to_previous_snapshot_never_to_live(cpi: LocalCpi, disk: Path) -> None:
    snap1 = cpi.snapshot_disk("disk-a", {})
    # Changed content, same size: only the (still old, so not racy) mtime tells.
    write(disk / "conf" / "app.yml", "a: 2\n", aged=False)
    os.utime(disk / "conf" / "app.yml", ns=(HOUR_AGO_NS, HOUR_AGO_NS + 1))
    snap2 = cpi.snapshot_disk("disk-a", {})
    live, f1, f2 = (r / "db.bin" for r in (disk, cpi.snapshot_path(snap1), cpi.snapshot_path(snap2)))
    assert f1.stat().st_ino == f2.stat().st_ino != live.stat().st_ino
    assert f2.stat().st_nlink == 2 and live.stat().st_nlink == 1
    assert stored(cpi, snap2, "db.bin") == "hardlink"
    # A file whose mtime changed is copied afresh.
    assert stored(cpi, snap2, "conf/app.yml") in ("copy", "reflink")
    assert (cpi.snapshot_path(snap2) / "conf" / "app.yml").read_text() == "a: 2\n"

    old = live.read_bytes()
    rewrite_in_place(live, b"\x00" * 4096)
    assert f1.read_bytes() == old and f2.read_bytes() == old
    snap3 = cpi.snapshot_disk("disk-a", {})
    assert stored(cpi, snap3, "db.bin") in ("copy", "reflink")
    assert (cpi.snapshot_path(snap3) / "db.bin").read_bytes() == live.read_bytes() != old


def test_racily_fresh_file_is_not_reused_even_if_size_and_mtime_match(cpi: LocalCpi, tmp_path: Path) -> None:
    # A rewrite within one timestamp tick keeps size and mtime: only the content changes.
    d = cpi.ensure_disk("disk-a")
    f = write(d / "page.db", b"A" * 512, aged=False)
    mtime = f.stat().st_mtime_ns
    snap1 = cpi.snapshot_disk("disk-a", {})
    rewrite_in_place(f, b"B" * 512)
    os.utime(f, ns=(mtime, mtime))
    snap2 = cpi.snapshot_disk("disk-a", {})
    assert (cpi.snapshot_path(snap1) / "page.db").read_bytes() == b"A" * 512
    assert (cpi.snapshot_path(snap2) / "page.db").read_bytes() == b"B" * 512


def test_nested_dirs_and_symlinks_are_copied_never_followed(cpi: LocalCpi, disk: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret", "s3cret")
    os.symlink("conf/app.yml", disk / "rel-link")
    os.symlink(outside, disk / "dir-link-out")
    os.symlink("/nonexistent/target", disk / "dangling")
    os.mkfifo(disk / "fifo")
    cid = cpi.snapshot_disk("disk-a", {})
    data = cpi.snapshot_path(cid)
    for name, target in (("rel-link", "conf/app.yml"), ("dir-link-out", str(outside)), ("dangling", "/nonexistent/target")):
        assert (data / name).is_symlink() and os.readlink(data / name) == target
    assert not (data / "fifo").exists() and not (data / "fifo").is_symlink()
    assert (data / "conf" / "deep" / "run.sh").read_text() == "#!/bin/sh\n"
    paths = {e["path"] for e in manifest(cpi, cid)["files"]}
    assert not any(p.startswith("dir-link-out/") for p in paths)
    assert {"conf", "conf/deep", "conf/deep/run.sh", "rel-link"} <= paths


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../etc", "a/b", "..", ".", "", "x" * 129, "abc\n", ".hidden", "-x", "a b", "/etc"])
def test_invalid_disk_cid_is_refused(cpi: LocalCpi, bad: str) -> None:
    with pytest.raises(CpiError) as e:
        cpi.snapshot_disk(bad, {})
    assert e.value.type == CLOUD_ERROR and e.value.message.startswith("invalid disk cid")
    with pytest.raises(CpiError) as e:
        cpi.delete_snapshot(bad)
    assert e.value.type == CLOUD_ERROR and "invalid snapshot cid" in e.value.message
    assert snapshot_dirs(cpi) == []


def test_longest_valid_cid_is_accepted(cpi: LocalCpi) -> None:
    cpi.ensure_disk("x" * 128)
    assert cpi.has_snapshot(cpi.snapshot_disk("x" * 128, {}))


def test_disk_directory_symlinked_outside_the_root_is_refused(cpi: LocalCpi, tmp_path: Path) -> None:
    write(tmp_path / "etc" / "passwd", "root:x:0:0")
    os.symlink(tmp_path / "etc", cpi.disk_root / "evil")
    with pytest.raises(CpiError) as e:
        cpi.snapshot_disk("evil", {})
    assert e.value.type == CLOUD_ERROR and "invalid disk cid" in e.value.message
    assert snapshot_dirs(cpi) == []


def test_operation_id_that_would_escape_is_refused(cpi: LocalCpi, disk: Path) -> None:
    with pytest.raises(CpiError) as e:
        cpi.snapshot_disk("disk-a", {"snapledger_operation_id": "../../x"})
    assert e.value.type == CLOUD_ERROR and "invalid snapshot cid" in e.value.message
    assert snapshot_dirs(cpi) == []


def test_missing_disk_is_disk_not_found(cpi: LocalCpi) -> None:
    with pytest.raises(CpiError) as e:
        cpi.snapshot_disk("disk-nope", {})
    assert e.value.type == DISK_NOT_FOUND
    assert cpi.last_call is not None and cpi.last_call.method == "snapshot_disk" and "disk-nope" in cpi.last_call.log


# -- idempotency and crash safety ------------------------------------------------------


def test_retry_with_same_operation_id_returns_same_snapshot_once(cpi: LocalCpi, disk: Path) -> None:
    meta = {"snapledger_operation_id": "op-42"}
    assert cpi.snapshot_disk("disk-a", meta) == "snap-op-42"
    rewrite_in_place(disk / "conf" / "app.yml", b"b: 2\n")
    assert cpi.snapshot_disk("disk-a", meta) == "snap-op-42"
    assert snapshot_dirs(cpi) == ["snap-op-42"]
    assert (cpi.snapshot_path("snap-op-42") / "conf" / "app.yml").read_text() == "a: 1\n"
    cpi.ensure_disk("disk-b")
    with pytest.raises(CpiError) as e:  # the same operation id cannot name another disk's snapshot
        cpi.snapshot_disk("disk-b", meta)
    assert e.value.type == CLOUD_ERROR


def test_concurrent_retry_that_wins_the_rename_leaves_one_copy(cpi: LocalCpi, disk: Path) -> None:
    other = LocalCpi(cpi.disk_root, cpi.snapshot_root)
    meta = {"snapledger_operation_id": "op-race"}
    real_copy = cpi.copier.copy

    def copy_then_lose_race(*args):  # the other attempt finishes while this one copies
        entries = real_copy(*args)
        assert other.snapshot_disk("disk-a", meta) == "snap-op-race"
        return entries

    cpi.copier.copy = copy_then_lose_race  # type: ignore[method-assign]
    assert cpi.snapshot_disk("disk-a", meta) == "snap-op-race"
    assert snapshot_dirs(cpi) == ["snap-op-race"]
    assert digest(cpi.snapshot_path("snap-op-race")) == digest(disk)


def test_failed_copy_leaves_nothing_and_maps_enospc(cpi: LocalCpi, disk: Path, monkeypatch) -> None:
    good = cpi.snapshot_disk("disk-a", {})
    write(disk / "new.bin", b"x" * 10)

    def full(src_fd: int, dst_fd: int) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_files, "clone", full)
    with pytest.raises(CpiError) as e:
        cpi.snapshot_disk("disk-a", {"snapledger_operation_id": "op-full"})
    assert e.value.type == NO_DISK_SPACE
    assert snapshot_dirs(cpi) == [good] and latest(cpi, "disk-a") == good


def test_stale_tmp_dirs_are_cleaned_on_construction(cpi: LocalCpi) -> None:
    stale, young = cpi.snapshot_root / ".tmp-snap-x-1", cpi.snapshot_root / ".tmp-snap-y-2"
    for d in (stale, young):
        write(d / "data" / "f", "partial")
    stale_index_tmp = write(cpi.snapshot_root / ".latest" / ".tmp-abc", "snap-x")
    for p in (stale, stale_index_tmp):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    LocalCpi(cpi.disk_root, cpi.snapshot_root)
    assert not stale.exists() and not stale_index_tmp.exists() and young.exists()


def test_reflink_is_attempted_on_the_destination_then_falls_back(cpi: LocalCpi, disk: Path, monkeypatch) -> None:
    calls: list[tuple[str, int, str]] = []

    def fake_ioctl(fd: int, request: int, arg: int) -> None:
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), request, os.readlink(f"/proc/self/fd/{arg}")))
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(local_files.fcntl, "ioctl", fake_ioctl)
    cid = cpi.snapshot_disk("disk-a", {})
    dst, request, src = calls[0]
    assert request == 0x40049409
    assert dst.startswith(str(cpi.snapshot_root.resolve())) and src.startswith(str(disk.resolve()))
    assert stored(cpi, cid, "db.bin") == "copy"
    assert digest(cpi.snapshot_path(cid)) == digest(disk)


# -- delete -------------------------------------------------------------------------


def test_delete_removes_snapshot_and_second_delete_is_disk_not_found(cpi: LocalCpi, disk: Path) -> None:
    snap1 = cpi.snapshot_disk("disk-a", {})
    snap2 = cpi.snapshot_disk("disk-a", {})
    assert latest(cpi, "disk-a") == snap2
    (cpi.snapshot_root / "lost+found").mkdir()  # snapshot_root may be a filesystem of its own
    cpi.delete_snapshot(snap2)
    assert not cpi.has_snapshot(snap2) and snapshot_dirs(cpi) == ["lost+found", snap1]
    assert latest(cpi, "disk-a") == snap1  # index falls back to the newest remaining
    with pytest.raises(CpiError) as e:
        cpi.delete_snapshot(snap2)
    assert (e.value.type, e.value.message) == (DISK_NOT_FOUND, f"snapshot {snap2} not found")
    cpi.delete_snapshot(snap1)
    assert latest(cpi, "disk-a") is None and snapshot_dirs(cpi) == ["lost+found"]


def test_deleting_first_snapshot_keeps_hard_linked_second_intact(cpi: LocalCpi, disk: Path) -> None:
    snap1 = cpi.snapshot_disk("disk-a", {})
    snap2 = cpi.snapshot_disk("disk-a", {})
    f2 = cpi.snapshot_path(snap2) / "db.bin"
    assert f2.stat().st_nlink == 2
    before = digest(cpi.snapshot_path(snap2))
    cpi.delete_snapshot(snap1)
    assert digest(cpi.snapshot_path(snap2)) == before
    assert f2.stat().st_nlink == 1 and stat.S_IMODE(f2.stat().st_mode) == 0o444  # not chmod-ed
    assert latest(cpi, "disk-a") == snap2


# -- VM, disks, concurrency ---------------------------------------------------------------


def test_current_vm_id_and_get_disks(cpi: LocalCpi, tmp_path: Path) -> None:
    assert cpi.current_vm_id() == "vm-1"
    assert cpi.get_disks("vm-1") == ["disk-a", "disk-b"]
    with pytest.raises(CpiError) as e:
        cpi.get_disks("vm-2")
    assert e.value.type == VM_NOT_FOUND
    assert LocalCpi(tmp_path / "d2", tmp_path / "s2").current_vm_id() == socket.gethostname()
    with pytest.raises(CpiError):
        LocalCpi(tmp_path / "d3", tmp_path / "s3", self_disks=["../up"])
    assert cpi.info() == {"api_version": 2, "stemcell_formats": []}


def test_concurrent_snapshots_of_different_disks(cpi: LocalCpi) -> None:
    disks = [f"disk-{i}" for i in range(8)]
    for i, name in enumerate(disks):
        write(cpi.ensure_disk(name) / "f", f"content {i}")
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            results[name] = [cpi.snapshot_disk(name, {}) for _ in range(3)]
        except BaseException as e:  # surfaced below: a thread cannot fail the test itself
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in disks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, name in enumerate(disks):
        assert latest(cpi, name) == results[name][-1]
        for cid in results[name]:
            assert (cpi.snapshot_path(cid) / "f").read_text() == f"content {i}"


# -- restore ------------------------------------------------------------------------


def test_restore_is_byte_for_byte_with_writable_independent_files(cpi: LocalCpi, disk: Path) -> None:
    os.symlink("conf/app.yml", disk / "link")
    original = digest(disk)
    snap1 = cpi.snapshot_disk("disk-a", {})
    snap2 = cpi.snapshot_disk("disk-a", {})  # restore from a hard-linked generation
    rewrite_in_place(disk / "db.bin", b"garbage")
    (disk / "conf" / "app.yml").unlink()
    write(disk / "extra.txt", "new")
    cpi.restore_snapshot(snap2, "disk-a")
    assert digest(disk) == original
    snap_inodes = {p.stat().st_ino for s in (snap1, snap2) for p in cpi.snapshot_path(s).rglob("*") if p.is_file()}
    for rel, mode in (("db.bin", 0o644), ("conf/app.yml", 0o644), ("conf/deep/run.sh", 0o755)):
        st = (disk / rel).stat()
        assert stat.S_IMODE(st.st_mode) == mode and st.st_nlink == 1 and st.st_ino not in snap_inodes
        assert st.st_mtime_ns == HOUR_AGO_NS
    assert not any(n.startswith(".snapledger-restore-") for n in os.listdir(disk))
    rewrite_in_place(disk / "db.bin", b"after restore")  # writing the disk leaves the snapshot alone
    assert (cpi.snapshot_path(snap2) / "db.bin").read_bytes() != (disk / "db.bin").read_bytes()
    assert digest(cpi.snapshot_path(snap1)) == digest(cpi.snapshot_path(snap2))
    with pytest.raises(CpiError) as e:
        cpi.restore_snapshot("snap-nope", "disk-a")
    assert e.value.type == DISK_NOT_FOUND


def test_delete_retry_after_permission_error_never_chmods_shared_files(cpi: LocalCpi, disk: Path, monkeypatch) -> None:
    # As non-root, unlinking can fail on a directory's permissions; the retry must fix
    # directories only, since a file's inode (and mode) is shared with other snapshots.
    snap1 = cpi.snapshot_disk("disk-a", {})
    snap2 = cpi.snapshot_disk("disk-a", {})
    real_unlink, denied = os.unlink, []

    def unlink_denied_once(path, *args, **kwargs):
        if str(path).endswith("db.bin") and not denied:
            denied.append(path)
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink_denied_once)
    cpi.delete_snapshot(snap1)
    assert denied and not cpi.has_snapshot(snap1)
    assert stat.S_IMODE((cpi.snapshot_path(snap2) / "db.bin").stat().st_mode) == 0o444


def test_failed_restore_leaves_live_disk_untouched(cpi: LocalCpi, disk: Path, monkeypatch) -> None:
    snap = cpi.snapshot_disk("disk-a", {})
    rewrite_in_place(disk / "db.bin", b"newer")
    live = digest(disk)

    def full(src_fd: int, dst_fd: int) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_files, "clone", full)
    with pytest.raises(CpiError) as e:
        cpi.restore_snapshot(snap, "disk-a")
    assert e.value.type == NO_DISK_SPACE
    assert digest(disk) == live


def test_self_disk_defaults_to_the_data_directory_with_a_consistent_ledger_copy(tmp_path: Path) -> None:
    import sqlite3

    from snapledger.adapters.config import Config
    from snapledger.adapters.bootstrap import SELF_DATA_DISK, build_cpis

    data = tmp_path / "data"
    config = Config(data_dir=data)
    (local,) = build_cpis(config).values()
    db = sqlite3.connect(data / "ledger.sqlite")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (42)")
    db.commit()  # held open: the committed row sits in the WAL, not yet in the main file
    (data / "disks" / "disk-a").mkdir()
    (data / "disks" / "disk-a" / "big").write_text("not part of the host disk")
    (data / "config.yml").write_text("x: 1")

    vm = local.current_vm_id()
    assert local.get_disks(vm) == [SELF_DATA_DISK]
    cid = local.snapshot_disk(SELF_DATA_DISK, {"snapledger_operation_id": "self-1"})
    content = local.snapshot_path(cid)
    names = sorted(p.name for p in content.iterdir())
    assert names == ["config.yml", "ledger.sqlite"]  # no disks/, snapshots/ or WAL files
    copy = sqlite3.connect(f"file:{content / 'ledger.sqlite'}?mode=ro", uri=True)
    assert copy.execute("SELECT x FROM t").fetchall() == [(42,)]
    copy.close()
    db.close()


def test_a_leftover_another_process_removes_meanwhile_does_not_stop_the_start(cpi: LocalCpi,
                                                                             monkeypatch) -> None:
    """Two workers share a snapshot root: one removes its deletion's trash while
    the other, starting, lists it. The start used to fail ("cannot start: ...
    .tmp-snap-...-deleted-...: No such file or directory") and the worker stayed down."""
    trash = write(cpi.snapshot_root / ".tmp-snap-x-deleted-0123abcd" / "data" / "f", "old").parents[1]
    real_scandir = os.scandir

    def listed_then_removed(path):  # the other process's rmtree lands between listing and stat
        if not isinstance(path, (str, os.PathLike)) or Path(path) != cpi.snapshot_root:  # rmtree walks by fd
            return real_scandir(path)
        entries = list(real_scandir(path))
        local_files.rmtree(trash)
        return iter(entries)

    monkeypatch.setattr(local.os, "scandir", listed_then_removed)
    LocalCpi(cpi.disk_root, cpi.snapshot_root)  # starts
    assert not trash.exists()
