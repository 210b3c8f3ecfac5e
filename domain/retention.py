"""Retention: which snapshots a policy lets go, decided by one pure function.

Policies combine, and the most protective wins: a snapshot is kept if ANY
rule keeps it. The safety rules hold whatever the policy says: the newest
successful snapshot of every disk is never expired, nor a pinned one, nor one
that is not simply `taken` (being taken, being deleted, in doubt).
`--dry-run` and the real run call the same `plan_expiry`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Iterable

from .errors import LedgerError
from .json_types import JsonObject

_DURATION = re.compile(r"(\d{1,6})([hdw])")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class InvalidPolicy(LedgerError):
    code = "invalid_policy"


def parse_duration(text: str) -> timedelta:
    """`36h`, `7d`, `12w`."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match:
        raise InvalidPolicy(f"invalid duration {text!r}: use a number and h, d or w (e.g. 7d, 12w)",
                            field="keep_for")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int | None = None  # the newest N taken snapshots of each disk
    keep_for: str | None = None  # snapshots younger than this (e.g. "7d")
    keep_clean: bool = False  # the newest clean (job-update) snapshot of each disk

    def __post_init__(self) -> None:
        if self.keep_last is not None and self.keep_last < 1:
            raise InvalidPolicy("keep_last must be at least 1 (the newest snapshot is always kept)",
                                field="keep_last")
        if self.keep_for is not None:
            parse_duration(self.keep_for)

    @property
    def is_empty(self) -> bool:
        """No rule: nothing ever expires (BOSH's behaviour)."""
        return self.keep_last is None and self.keep_for is None

    def as_dict(self) -> JsonObject:
        return {"keep_last": self.keep_last, "keep_for": self.keep_for, "keep_clean": self.keep_clean}

    @classmethod
    def from_dict(cls, data: JsonObject | None) -> RetentionPolicy:
        data = data or {}
        keep_last, keep_for = data.get("keep_last"), data.get("keep_for")
        # As stored: keep_last a whole number, keep_for a duration text (None: no such rule).
        return cls(keep_last=keep_last if isinstance(keep_last, int) else None,
                   keep_for=keep_for if isinstance(keep_for, str) else None,
                   keep_clean=bool(data.get("keep_clean", False)))

    def describe(self) -> str:
        rules = []
        if self.keep_last is not None:
            rules.append(f"keep the last {self.keep_last}")
        if self.keep_for is not None:
            rules.append(f"keep for {self.keep_for}")
        if self.keep_clean:
            rules.append("keep at least one clean")
        return ", ".join(rules) or "keep everything"


@dataclass(frozen=True)
class Candidate:
    """What retention needs to know of one snapshot."""

    snapshot_id: str
    snapshot_cid: str
    disk_cid: str
    created_at: datetime
    clean: bool
    state: str
    pinned: bool = False


@dataclass(frozen=True)
class Expiry:
    snapshot_id: str
    snapshot_cid: str
    disk_cid: str
    reason: str


def plan_expiry(policy: RetentionPolicy, snapshots: Iterable[Candidate], now: datetime) -> list[Expiry]:
    """The snapshots `policy` lets go at `now`, each with the reason."""
    if policy.is_empty:
        return []
    by_disk: dict[str, list[Candidate]] = {}
    for snap in snapshots:
        by_disk.setdefault(snap.disk_cid, []).append(snap)
    max_age = parse_duration(policy.keep_for) if policy.keep_for else None
    expired = []
    for disk, snaps in sorted(by_disk.items()):
        taken = sorted((s for s in snaps if s.state == "taken"), key=lambda s: s.created_at, reverse=True)
        newest_clean = next((s for s in taken if s.clean), None)
        for rank, snap in enumerate(taken):
            if rank == 0 or snap.pinned:
                continue  # safety: the newest of the disk; pinned (legal hold)
            if policy.keep_clean and snap is newest_clean:
                continue
            if policy.keep_last is not None and rank < policy.keep_last:
                continue
            age = now - snap.created_at
            if max_age is not None and age < max_age:
                continue
            why = []
            if policy.keep_last is not None:
                why.append(f"older than the last {policy.keep_last} of disk {disk}")
            if max_age is not None:
                why.append(f"{_human(age)} old, beyond {policy.keep_for}")
            expired.append(Expiry(snap.snapshot_id, snap.snapshot_cid, disk, "; ".join(why)))
    return expired


def _human(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h"
