"""Rendezvous ownership of operations among live workers (adapters/disk_owners.py, decision 41)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter

from snapledger.adapters.disk_owners import DiskOwners, gone_before_me, owner, owner_key

DISKS = [f"disk-{i}" for i in range(3000)]
WORKERS = [f"host:{pid}:abc{pid}" for pid in (101, 202, 303, 404)]


def owners(workers: list[str]) -> dict[str, str]:
    return {disk: owner(disk, workers) for disk in DISKS}


def test_the_owner_is_the_same_in_every_process_and_for_any_order_of_the_live_set() -> None:
    here = owner("disk-7", WORKERS)
    assert owner("disk-7", list(reversed(WORKERS))) == here
    assert owner("disk-7", set(WORKERS)) == here
    # Another interpreter (another hash seed): the same owner, so two worker processes agree.
    code = f"from snapledger.adapters.disk_owners import owner; print(owner('disk-7', {WORKERS!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345"}).stdout.strip()
    assert other == here


def test_disks_spread_roughly_evenly_over_the_workers() -> None:
    shares = Counter(owners(WORKERS).values())
    assert set(shares) == set(WORKERS)
    for worker in WORKERS:  # 750 each on average; 4 standard deviations is ~95
        assert 600 < shares[worker] < 900, shares


def test_a_worker_leaving_moves_only_its_own_disks() -> None:
    before, after = owners(WORKERS), owners(WORKERS[:-1])
    moved = {disk for disk in DISKS if before[disk] != after[disk]}
    assert moved == {disk for disk in DISKS if before[disk] == WORKERS[-1]}


def test_a_worker_joining_takes_about_one_in_n_and_from_every_worker() -> None:
    before, after = owners(WORKERS[:-1]), owners(WORKERS)
    moved = [disk for disk in DISKS if before[disk] != after[disk]]
    assert all(after[disk] == WORKERS[-1] for disk in moved)  # only to the new worker
    assert 600 < len(moved) < 900  # ~1/4 of 3,000
    assert set(before[disk] for disk in moved) == set(WORKERS[:-1])


def test_an_operation_without_a_disk_is_owned_by_its_id() -> None:
    assert owner_key("disk-1", "op-1") == "disk-1"
    assert owner_key(None, "op-1") != owner_key(None, "op-2")


def test_a_worker_that_has_not_read_the_live_set_yet_owns_everything() -> None:
    """Racing another worker is slow but safe; passing over work nobody runs is not."""
    view = DiskOwners("me")
    assert all(view.owns(disk) for disk in DISKS[:100])
    view.update({"other"})
    assert "me" in view.live()  # a worker always counts itself
    assert {view.owns(disk) for disk in DISKS[:100]} == {True, False}


def test_an_earlier_run_on_this_host_is_gone_when_its_process_is() -> None:
    """A restarted worker forgets its killed predecessor's beat (it would pass that
    run's disks over to it for a lease); a live process's beat is kept."""
    host, me = socket.gethostname(), f"{socket.gethostname()}:{os.getpid()}:aaaaaa"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    assert gone_before_me(f"{host}:{finished.stdout.strip()}:bbbbbb", me)
    assert gone_before_me(f"{host}:{os.getpid()}:cccccc", me)  # our pid, another run: a container's pid 1
    assert not gone_before_me(me, me)
    assert not gone_before_me(f"{host}:{os.getppid()}:dddddd", me)  # a running process
    assert not gone_before_me(f"elsewhere:{finished.stdout.strip()}:eeeeee", me)  # another host: its own lease
    assert not gone_before_me("w1", me)


def test_a_forgotten_earlier_run_stays_out_of_the_view_though_its_beat_is_fresh() -> None:
    view = DiskOwners("me")
    view.forget({"before-me", "me"})
    view.update({"me", "before-me", "other"})
    assert view.live() == {"me", "other"}
