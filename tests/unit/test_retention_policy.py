from __future__ import annotations

from datetime import datetime, timedelta, UTC

import pytest

from snapledger.domain.retention import Candidate, InvalidPolicy, RetentionPolicy, parse_duration, plan_expiry

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def snaps(disk: str, ages_days: list[float], clean: set[int] = frozenset(), pinned: set[int] = frozenset(),
          states: dict[int, str] | None = None) -> list[Candidate]:
    return [Candidate(f"{disk}-{i}", f"snap-{disk}-{i}", disk, NOW - timedelta(days=age), i in clean,
                      (states or {}).get(i, "taken"), pinned=i in pinned)
            for i, age in enumerate(ages_days)]


def expired(policy: RetentionPolicy, candidates: list[Candidate]) -> list[str]:
    return sorted(e.snapshot_id for e in plan_expiry(policy, candidates, NOW))


@pytest.mark.parametrize("policy,ages,want", [
    (RetentionPolicy(), [0, 1, 2, 30], []),  # no rule: keep everything (BOSH)
    (RetentionPolicy(keep_last=2), [0, 1, 2, 30], ["d-2", "d-3"]),
    (RetentionPolicy(keep_for="7d"), [0, 1, 8, 30], ["d-2", "d-3"]),
    (RetentionPolicy(keep_for="36h"), [0, 1, 2], ["d-2"]),
    # combined: the most protective wins (kept if ANY rule keeps it)
    (RetentionPolicy(keep_last=1, keep_for="7d"), [0, 1, 8, 30], ["d-2", "d-3"]),
    (RetentionPolicy(keep_last=3, keep_for="1d"), [0, 2, 3, 4], ["d-3"]),
    # the newest is never expired, however old
    (RetentionPolicy(keep_for="1d"), [40, 50], ["d-1"]),
])
def test_policies(policy: RetentionPolicy, ages: list[float], want: list[str]) -> None:
    assert expired(policy, snaps("d", ages)) == want


def test_keep_clean_keeps_the_newest_clean_of_each_disk() -> None:
    candidates = snaps("d", [0, 1, 2, 3], clean={2, 3})
    assert expired(RetentionPolicy(keep_last=1, keep_clean=True), candidates) == ["d-1", "d-3"]
    assert expired(RetentionPolicy(keep_last=1), candidates) == ["d-1", "d-2", "d-3"]


def test_pinned_and_unfinished_snapshots_are_never_expired() -> None:
    candidates = snaps("d", [0, 1, 2, 3, 4], pinned={2}, states={3: "in_doubt", 4: "deleting"})
    assert expired(RetentionPolicy(keep_last=1), candidates) == ["d-1"]


def test_each_disk_has_its_own_newest_and_ranks() -> None:
    candidates = snaps("a", [0, 1, 2]) + snaps("b", [5, 6])
    assert expired(RetentionPolicy(keep_last=1), candidates) == ["a-1", "a-2", "b-1"]


def test_reasons_name_the_rule() -> None:
    (expiry,) = plan_expiry(RetentionPolicy(keep_last=1, keep_for="7d"), snaps("d", [0, 10]), NOW)
    assert "older than the last 1" in expiry.reason and "beyond 7d" in expiry.reason


@pytest.mark.parametrize("text", ["7", "7x", "-1d", "d", "", "1.5d", "10000000d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidPolicy):
        parse_duration(text)


def test_bad_policies() -> None:
    with pytest.raises(InvalidPolicy):
        RetentionPolicy(keep_last=0)
    assert parse_duration("12w") == timedelta(weeks=12)
