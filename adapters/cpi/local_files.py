"""The file operations of the local CPI: copy-on-write clones, atomic writes,
directory locks, consistent copies of live SQLite databases, and the checks
that keep CIDs and manifest paths inside the CPI's roots."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Required, TypedDict

from snapledger.domain.cpi import CLOUD_ERROR, CpiError

FICLONE = 0x40049409  # ioctl: share the source's extents (copy-on-write)
CID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TMP_PREFIX = ".tmp-"  # what is being built or deleted (a valid CID never starts with '.')


class StoredCopy(TypedDict):
    """How a file's copy was stored, as its manifest entry records it."""

    size: int
    mtime_ns: int
    stored: str  # hardlink | reflink | copy | sqlite-backup


class FileEntry(TypedDict, total=False):
    """One entry of a snapshot's manifest (local_copy.DiskCopier.copy): a file,
    a directory (path, type, mode) or a symlink (path, type, target)."""

    path: Required[str]
    type: Required[str]  # file | dir | symlink
    target: str
    mode: int
    size: int
    mtime_ns: int
    stored: str
    linkable: bool


def check_cid(cid: object, kind: str) -> str:
    # fullmatch, not `$`: `$` would accept a trailing newline.
    if not isinstance(cid, str) or cid in (".", "..") or not CID_RE.fullmatch(cid):
        raise CpiError(CLOUD_ERROR, f"invalid {kind} cid {cid!r:.80}")
    return cid


def scan(root: Path, rel: str = "", exclude: frozenset[Path] = frozenset()) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Pre-order walk (parents before children) that never follows symlinks
    and leaves out the `exclude`d directories entirely."""
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = os.path.join(rel, entry.name)
        if exclude and root / path in exclude:
            continue
        yield path, entry
        if entry.is_dir(follow_symlinks=False):
            yield from scan(root, path, exclude)


def clone(src_fd: int, dst_fd: int) -> str:
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return "reflink"
    except OSError:
        pass  # ext4, tmpfs, another device...: make a real copy
    with os.fdopen(src_fd, "rb", closefd=False) as src, os.fdopen(dst_fd, "wb", closefd=False) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return "copy"


def copy_file(src: Path, dst: Path, mode: int) -> tuple[str, os.stat_result, bool]:
    """Copy a regular file to a new ``dst``: (how, source stat, source unchanged during copy)."""
    # O_NOFOLLOW: a file swapped for a symlink after the scan is refused, not followed.
    src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        before = os.fstat(src_fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, f"{src} is no longer a regular file")
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            how = clone(src_fd, dst_fd)
            os.fchmod(dst_fd, mode)
            os.utime(dst_fd, ns=(before.st_atime_ns, before.st_mtime_ns))
        finally:
            os.close(dst_fd)
        after = os.fstat(src_fd)
    finally:
        os.close(src_fd)
    return how, before, _unchanged(before, after)


def _unchanged(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (after.st_size, after.st_mtime_ns,
                                                                       after.st_ctime_ns)


def hold(directory: Path, wait: bool = True) -> int:
    """An flock on `directory` (its fd: close it to release): marks it in use
    by this process; the kernel releases it when the process dies."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def rmtree(path: Path) -> None:
    # _exc: onexc's exception or onerror's exc_info (the Python version decides which is called).
    def retry(func: Callable[[str], object], p: str, _exc: object) -> None:
        # Unlinking needs write permission on the parent directory only. Files
        # are never chmod-ed: they may share an inode with another snapshot.
        for target in (os.path.dirname(p), p):
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, stat.S_IMODE(os.lstat(target).st_mode) | 0o700)
        func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def backup_sqlite(src: Path, dst: Path) -> StoredCopy:
    """A live SQLite database copied file by file can be torn (pages and WAL
    copied at different moments); the online backup API gives a consistent
    copy, as of one transaction. The snapledger ledger itself is one of these."""
    import sqlite3

    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    os.chmod(dst, 0o444)
    st = os.stat(dst)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "stored": "sqlite-backup"}


def safe_rel(rel: str) -> str:
    # Manifests are ours, but a tampered one must not make restore write outside the disk.
    if not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise CpiError(CLOUD_ERROR, f"manifest has an unsafe path {rel!r:.80}")
    return rel


def replace_content(disk: Path, entries: list[FileEntry], data: Path, stage_prefix: str) -> None:
    """Replace the disk's content with a snapshot's (its manifest `entries`, files
    under `data`), as new writable files.

    Staged inside the disk itself: same filesystem even when the disk is a
    mount point, and a failed copy (ENOSPC) leaves the live content intact."""
    stage = Path(tempfile.mkdtemp(prefix=stage_prefix, dir=disk))
    try:
        dir_modes: list[tuple[str, int]] = []
        for entry in entries:
            rel = safe_rel(entry["path"])
            dst = stage / rel
            if entry["type"] == "dir":
                os.mkdir(dst, 0o700)
                dir_modes.append((rel, entry["mode"]))
            elif entry["type"] == "symlink":
                os.symlink(entry["target"], dst)
            else:
                copy_file(data / rel, dst, entry["mode"])
                os.utime(dst, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        for child in os.listdir(disk):
            if child != stage.name:
                p = disk / child
                rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for child in os.listdir(stage):
            os.rename(stage / child, disk / child)
        # Modes last: a read-only directory could not receive its children.
        for rel, mode in reversed(dir_modes):
            os.chmod(disk / rel, mode)
    finally:
        if stage.exists():
            rmtree(stage)
