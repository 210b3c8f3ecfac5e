"""The local CPI's copy of a disk into a snapshot: every file, directory and
symlink, SQLite databases by their backup API, and a file unchanged since the
disk's previous snapshot as a hard link to that snapshot's immutable copy."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from .local_files import SQLITE_SIDE_FILES, FileEntry, backup_sqlite, copy_file, is_sqlite, scan
from .local_index import Previous

# A file whose mtime is this close to its copy may be rewritten within the same
# timestamp tick without its mtime changing ("racily clean" in git's words);
# such a copy is never reused by hard link, else a later snapshot could hold
# stale content. 2 s covers coarse clocks (FAT, some network filesystems).
RACY_NS = 2_000_000_000
RESTORE_STAGE = ".snapledger-restore-"  # inside a disk, while a restore runs


class DiskCopier:
    def __init__(self, excluded: frozenset[Path]) -> None:
        # Never copy our own disks and snapshots into a snapshot of a directory holding them.
        self.excluded = excluded

    def copy(self, src_root: Path, dst_root: Path, prev: Previous) -> list[FileEntry]:
        os.mkdir(dst_root, 0o700)
        entries: list[FileEntry] = []
        for rel, entry in scan(src_root, exclude=self.excluded):
            if rel.startswith(RESTORE_STAGE):
                continue  # the leftover of a crashed restore is not disk content
            src, dst = src_root / rel, dst_root / rel
            if rel.endswith(SQLITE_SIDE_FILES) and is_sqlite(src_root / rel.rsplit("-", 1)[0]):
                continue  # SQLite journals: the database's backup holds their content
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):  # kept as a link, never followed
                target = os.readlink(src)
                os.symlink(target, dst)
                entries.append({"path": rel, "type": "symlink", "target": target})
            elif stat.S_ISDIR(st.st_mode):  # owner-writable so deletion works
                os.mkdir(dst, stat.S_IMODE(st.st_mode) | 0o700)
                entries.append({"path": rel, "type": "dir", "mode": stat.S_IMODE(st.st_mode)})
            elif stat.S_ISREG(st.st_mode):
                entries.append(self._store_file(src, dst, rel, st, prev))
            # FIFOs, sockets and devices are not content: skipped.
        return entries

    def _store_file(self, src: Path, dst: Path, rel: str, st: os.stat_result, prev: Previous) -> FileEntry:
        entry: FileEntry = {"path": rel, "type": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                 "mode": stat.S_IMODE(st.st_mode), "linkable": True}
        base = self._link_base(rel, st, prev)
        if base is not None:
            try:  # unchanged since the previous snapshot: share its immutable copy
                os.link(base, dst, follow_symlinks=False)
                return {**entry, "stored": "hardlink"}
            except OSError:
                pass  # EMLINK, or that snapshot is being deleted: copy instead
        copy_start = time.time_ns()
        if is_sqlite(src):
            return {**entry, **backup_sqlite(src, dst), "linkable": False}
        how, before, stable = copy_file(src, dst, 0o444)
        racy = before.st_mtime_ns > copy_start - RACY_NS
        return {**entry, "size": before.st_size, "mtime_ns": before.st_mtime_ns,
                "mode": stat.S_IMODE(before.st_mode), "stored": how, "linkable": stable and not racy}

    @staticmethod
    def _link_base(rel: str, st: os.stat_result, prev: Previous) -> Path | None:
        if prev is None:
            return None
        data, by_path = prev
        old = by_path.get(rel)
        if not old or old["type"] != "file" or not old.get("linkable"):
            return None
        if (old["size"], old["mtime_ns"]) != (st.st_size, st.st_mtime_ns):
            return None
        base = data / rel
        try:
            b = os.lstat(base)
        except OSError:
            return None
        # Never link to the live file: it changes in place and would change the snapshot.
        if not stat.S_ISREG(b.st_mode) or (b.st_dev, b.st_ino) == (st.st_dev, st.st_ino):
            return None
        return base
