"""Which live worker process runs an operation: rendezvous (highest-random-weight) hashing.

Why: every snapshot worker follows the whole log. When each tried every
operation, two workers raced for all of them (the claim is optimistic-
concurrency checked, so one won, but both paid the reads, the claim attempt
and the conflict): two processes took ~50 snapshots/s where one took ~290.
Now each operation has one owner among the live workers, by its disk (an
operation without one, a self-discovery, by its id), and only the owner
submits it (decision 41).

Why rendezvous: each worker computes the owner alone, from the live set it
last read (`worker_heartbeats`), with no coordination; removing a worker moves
only that worker's disks, adding one moves ~1/N of them. And views that
disagree (one worker read the heartbeats before another joined) lose nothing:
the worker with the highest weight over all the views is in its own view
(a worker always counts itself), so it owns the operation by its own view
and runs it. Only a dead worker's operations wait, for the recovery sweep.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable


def weight(worker: str, key: str) -> int:
    """A stable pseudo-random weight of (worker, key): the same in every process
    and run (Python's `hash` of a str is salted per process)."""
    digest = hashlib.blake2b(f"{worker}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, workers: Iterable[str]) -> str:
    """The worker of `workers` with the highest weight for `key` (ties, near
    impossible with 64 bits, go to the greatest name: still deterministic)."""
    return max(workers, key=lambda worker: (weight(worker, key), worker))


def owner_key(disk: str | None, operation_id: object) -> str:
    """What an operation is owned by: its disk (so a disk's operations stay in
    one worker's per-disk queue), or its id when it has no disk."""
    return disk if disk is not None else f"op:{operation_id}"


def gone_before_me(worker: str, me: str) -> bool:
    """Whether `worker` is an earlier run on this host whose process is gone
    (ids are host:pid:random, adapters/bootstrap.py `worker_id`).

    Why: a worker killed and restarted leaves a beat that looks alive for a
    lease; the new run would pass that run's disks over to it and they waited
    a lease for the sweep (a restarted single `serve` process: every other
    disk). Only the ownership view leaves it out (`DiskOwners.forget`), never
    the heartbeats the sweeps judge claims by: taking a live worker for gone
    (two containers with one hostname, both pid 1) then only races for its
    disks, it never takes its calls for abandoned."""
    try:
        host, pid, _ = worker.rsplit(":", 2)
        my_host, my_pid, _ = me.rsplit(":", 2)
        number = int(pid)
    except ValueError:
        return False  # not an id of ours (tests name their workers)
    if host != my_host or worker == me:
        return False
    if pid == my_pid:
        return True  # the same pid on the same host: an earlier run (a container's pid 1)
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: a process of another user has that pid now
        return False
    return False


class DiskOwners:
    """This worker's view of the live workers, refreshed on the heartbeat
    interval (not per operation: the follower reads thousands a second)."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        # Until the first refresh: only ourselves, so we run everything (two
        # workers racing is slow but safe; passing over work nobody takes is not).
        self._live: frozenset[str] = frozenset({worker})
        self._gone: frozenset[str] = frozenset()  # earlier runs, left out though their beat is fresh
        self._lock = threading.Lock()

    def forget(self, workers: Iterable[str]) -> None:
        with self._lock:
            self._gone |= frozenset(workers) - {self.worker}
            self._live -= self._gone

    def update(self, live: Iterable[str]) -> None:
        with self._lock:
            self._live = (frozenset(live) - self._gone) | {self.worker}

    def live(self) -> frozenset[str]:
        with self._lock:
            return self._live

    def owns(self, key: str) -> bool:
        return owner(key, self.live()) == self.worker
