"""CPI rate limits shared through the event store's database (both backends)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snapledger.adapters.config import ConfigError, CpiSpec
from snapledger.adapters.cpi.call_processes import MissedStart
from snapledger.adapters.metrics import REGISTRY
from snapledger.adapters.rate_buckets import DDL, ClockMapping, SharedBuckets
from snapledger.adapters.rate_limit import START_GRACE_S, RateLimitedCpi, StartLead
from snapledger.adapters.store import ensure_schema, open_database, parse_store_url
from snapledger.domain.cpi import CLOUD_ERROR, CpiError
from snapledger.domain.rate_limit import Rate, RateLimit

THROTTLED = "RequestLimitExceeded"


def create_buckets_table(db: Any) -> None:
    with db.transaction() as cur:  # what bootstrap.create_schema does for a process
        cur.execute(DDL)


@pytest.fixture
def buckets(store_url: str) -> Any:
    url = parse_store_url(store_url)
    ensure_schema(url)
    db = open_database(url)
    create_buckets_table(db)
    yield SharedBuckets(db)
    db.close()


def emission(buckets: SharedBuckets, bucket: str, rate: Rate, recover_after_s: float = 10.0) -> float:
    """When the reserved call may start (this process's monotonic clock)."""
    wait = buckets.reserve(bucket, rate, recover_after_s)
    return time.monotonic() + wait


def slots(buckets: SharedBuckets, rate: Rate, count: int, bucket: str = "aws:*",
          recover_after_s: float = 10.0) -> list[float]:
    """When each of `count` reserved calls may start, relative to the first (the bucket's clock)."""
    times = [buckets.reserve_slot(bucket, rate, recover_after_s) for _ in range(count)]
    return [round(t - times[0], 1) for t in times]


# Slow rates (intervals of seconds) make the schedule exact: the few
# milliseconds between two reservations do not show in it.

def test_a_burst_starts_at_once_then_calls_keep_the_rate(buckets: SharedBuckets) -> None:
    rate = Rate(calls=1, per_s=10.0, burst=3)
    assert [buckets.reserve("aws:*", rate, 10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert slots(buckets, rate, 3) == [0.0, 10.0, 20.0]


def test_a_reserved_slot_is_waited_for(buckets: SharedBuckets) -> None:
    rate = Rate(calls=1, per_s=10.0)
    assert buckets.reserve("aws:*", rate, 10.0) == 0.0
    assert 9.0 < buckets.reserve("aws:*", rate, 10.0) <= 10.0


def test_buckets_are_independent(buckets: SharedBuckets) -> None:
    rate = Rate(calls=1, per_s=10.0)
    assert buckets.reserve("aws:snapshot_disk", rate, 10.0) == 0.0
    assert buckets.reserve("gcp:snapshot_disk", rate, 10.0) == 0.0
    assert buckets.reserve("aws:snapshot_disk", rate, 10.0) > 9.0


def test_a_throttling_answer_slows_every_caller_down_once_per_period(buckets: SharedBuckets) -> None:
    rate = Rate(calls=1, per_s=10.0)
    assert buckets.throttled("aws:*", rate) == 2.0
    # Calls throttled together double the interval once, not once each.
    assert buckets.throttled("aws:*", rate) == 2.0
    assert slots(buckets, rate, 3) == [0.0, 20.0, 40.0]


def test_a_slowdown_recovers_after_a_quiet_spell(buckets: SharedBuckets) -> None:
    rate = Rate(calls=1, per_s=10.0)
    buckets.throttled("aws:*", rate)
    time.sleep(0.3)
    assert slots(buckets, rate, 3, recover_after_s=0.2) == [0.0, 10.0, 20.0]


def test_threads_of_two_limiters_never_exceed_the_limit_together(store_url: str) -> None:
    # Two SharedBuckets on two pools stand for two worker processes.
    url = parse_store_url(store_url)
    ensure_schema(url)
    dbs = [open_database(url), open_database(url)]
    create_buckets_table(dbs[0])
    limiters = [SharedBuckets(db) for db in dbs]
    rate = Rate(calls=100, per_s=1.0, burst=5)
    starts: list[float] = []
    lateness: list[float] = []
    lock = threading.Lock()

    def caller(limiter: SharedBuckets) -> None:
        for _ in range(25):
            due = emission(limiter, "aws:*", rate)
            time.sleep(max(due - time.monotonic(), 0.0))
            started = time.monotonic()
            with lock:
                starts.append(started)
                lateness.append(started - due)

    threads = [threading.Thread(target=caller, args=(limiters[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for db in dbs:
        db.close()
    starts.sort()
    assert len(starts) == 400
    # A limiter decides when a call may start; a thread that wakes late moves
    # its call closer to the next ones. That, and only that, may add calls to
    # a window: one per interval of the latest wake-up. (Two limiters that did
    # not share the bucket would start up to twice the limit.)
    allowance = int(max(lateness) / rate.interval_s) + 1
    busiest = max(sum(1 for t in starts[i:] if t < s + 1.0) for i, s in enumerate(starts))
    assert busiest <= rate.calls + rate.burst + allowance, (busiest, allowance)
    # Over the whole run the rate is kept, not only within windows.
    assert starts[-1] - starts[0] >= (len(starts) - rate.burst) * rate.interval_s - 0.01


class FlakyCloud:
    """The IaaS boundary: throttles the first `throttle` calls."""

    name = "aws"

    def __init__(self, throttle: int, error_type: str = THROTTLED) -> None:
        self.throttle, self.error_type, self.calls = throttle, error_type, 0
        self.last_call = "the record of the last call"

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any]) -> str:
        self.calls += 1
        if self.calls <= self.throttle:
            raise CpiError(self.error_type, "Request limit exceeded.", ok_to_retry=True)
        return f"snap-{disk_cid}"


def test_the_cpi_answer_that_names_throttling_slows_the_shared_rate(buckets: SharedBuckets) -> None:
    limit = RateLimit(rate=Rate(calls=1, per_s=10.0), throttle_errors=frozenset({THROTTLED}))
    slept: list[float] = []
    cpi = RateLimitedCpi(FlakyCloud(throttle=1), limit, buckets, sleep=slept.append)
    with pytest.raises(CpiError):
        cpi.snapshot_disk("disk-0", {})
    assert cpi.snapshot_disk("disk-0", {}) == "snap-disk-0"
    assert slept and 9.0 < slept[0] <= 10.0  # the second call waited for its slot
    assert cpi.last_call == "the record of the last call" and cpi.name == "aws"
    gaps = slots(buckets, limit.rate, 2)  # slowed down for every process: 2 x 10 s
    assert gaps == [0.0, 20.0]


def test_other_errors_do_not_slow_the_rate(buckets: SharedBuckets) -> None:
    limit = RateLimit(rate=Rate(calls=1, per_s=10.0), throttle_errors=frozenset({THROTTLED}))
    cpi = RateLimitedCpi(FlakyCloud(throttle=1, error_type=CLOUD_ERROR), limit, buckets, sleep=lambda s: None)
    with pytest.raises(CpiError):
        cpi.snapshot_disk("disk-0", {})
    assert slots(buckets, limit.rate, 2) == [0.0, 10.0]


def test_a_method_limit_applies_besides_the_cpi_limit(buckets: SharedBuckets) -> None:
    limit = RateLimit.parse({"calls": 1000, "per": "1s", "methods": {"snapshot_disk": {"calls": 1, "per": "10s"}}})
    slept: list[float] = []
    cpi = RateLimitedCpi(FlakyCloud(throttle=0), limit, buckets, sleep=slept.append)
    cpi.snapshot_disk("a", {})
    cpi.snapshot_disk("b", {})
    assert slept and slept[-1] > 9.0


def test_a_slot_is_reserved_at_least_the_lead_ahead(buckets: SharedBuckets) -> None:
    rate = Rate(calls=1, per_s=10.0)
    assert 1.9 < buckets.reserve("aws:*", rate, 10.0, lead_s=2.0) <= 2.0
    assert 11.9 < buckets.reserve("aws:*", rate, 10.0) <= 12.0  # the next slot counts from the lead's


def test_callers_asking_different_leads_still_keep_the_bound(buckets: SharedBuckets) -> None:
    # Worker processes adapt their own lead (StartLead): the slots they get
    # together must still never put more than window / interval + burst in a window.
    rate = Rate(calls=2, per_s=1.0, burst=3)
    leads = [0.0, 3.0, 0.0, 0.0, 1.5, 0.0, 2.5, 0.0, 0.0, 0.7] * 4
    times = sorted(buckets.reserve_slot("aws:*", rate, 10.0, lead) for lead in leads)
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert busiest <= 1.0 / rate.interval_s + rate.burst, times


def test_a_slot_is_read_on_the_clock_after_the_rows_lock_not_while_queueing_for_it(pg_url: str) -> None:
    # Another process holds the bucket's row for 0.5 s: a reservation queued
    # behind it must not get a slot from before it had the row (a stale clock).
    url = parse_store_url(pg_url)
    ensure_schema(url)
    db = open_database(url)
    create_buckets_table(db)
    buckets = SharedBuckets(db)
    rate = Rate(calls=1, per_s=0.001)
    buckets.reserve_slot("aws:*", rate, 10.0)  # the row exists
    released: list[float] = []
    holding = threading.Event()

    def hold() -> None:
        with db.transaction() as cur:
            cur.execute("SELECT tat FROM cpi_rate_limits WHERE bucket = 'aws:*' FOR UPDATE")
            holding.set()
            time.sleep(0.5)
            released.append(float(cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS t")
                                  .fetchone()["t"]))

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    slot = buckets.reserve_slot("aws:*", rate, 10.0)
    holder.join()
    db.close()
    assert slot >= released[0], (slot, released)


def test_the_clock_mapping_trusts_the_tightest_recent_round_trip() -> None:
    mapping = ClockMapping()
    mapping.observe(sent=10.0, received=10.2, clock_value=1000.1)  # offset 990.0, +-0.1
    mapping.observe(sent=20.0, received=20.002, clock_value=1010.0)  # offset 989.999, +-0.001
    mapping.observe(sent=21.0, received=21.5, clock_value=1011.3)  # a slow one: not trusted
    assert mapping.to_monotonic(1100.0) == pytest.approx(110.001)
    mapping.observe(sent=60.0, received=60.5, clock_value=1050.45)  # the tight one is 40 s old now
    assert mapping.to_monotonic(1100.0) == pytest.approx(109.8)


def missed_slots(cpi: str) -> float:
    return REGISTRY.get_sample_value("snapledger_cpi_rate_limit_slots_missed_total", {"cpi": cpi}) or 0.0


class OnTimeCloud(FlakyCloud):
    """An IaaS boundary whose calls are started by their spawner within a window it
    takes when the call is ready, as the external CPI's are; the first `miss` calls
    miss theirs (never started)."""

    def __init__(self, miss: int) -> None:
        super().__init__(throttle=0)
        self.miss, self.windows, self.late_s = miss, [], 0.05
        self.take: Any = None

    @contextlib.contextmanager
    def starting_within(self, window: Any) -> Iterator[None]:
        self.take = window
        try:
            yield
        finally:
            self.take = None

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any]) -> str:
        assert callable(self.take), "called without a window to take"
        self.windows.append(self.take())
        if len(self.windows) <= self.miss:
            raise MissedStart(ahead_s=-self.late_s)
        return super().snapshot_disk(disk_cid, metadata)


def test_a_call_its_spawner_starts_gets_a_window_not_a_sleep(buckets: SharedBuckets) -> None:
    limit = RateLimit(rate=Rate(calls=1, per_s=10.0))
    cloud, slept = OnTimeCloud(miss=0), []
    cpi = RateLimitedCpi(cloud, limit, buckets, sleep=slept.append)
    before = time.monotonic()
    assert cpi.snapshot_disk("a", {}) == "snap-a" and cpi.snapshot_disk("b", {}) == "snap-b"
    assert slept == []  # the thread did not wait: the window went with the call
    first, second = cloud.windows
    assert second.at - first.at == pytest.approx(10.0, abs=0.05)  # the limit's interval
    assert first.at >= before and first.by - first.at == pytest.approx(START_GRACE_S)


def test_a_missed_window_takes_a_new_slot_and_calls_once(buckets: SharedBuckets) -> None:
    limit = RateLimit(rate=Rate(calls=1, per_s=10.0))
    cloud = OnTimeCloud(miss=1)
    cpi = RateLimitedCpi(cloud, limit, buckets)
    missed_before = missed_slots("aws")
    assert cpi.snapshot_disk("a", {}) == "snap-a"
    assert cloud.calls == 1  # the missed call never reached the IaaS
    assert missed_slots("aws") == missed_before + 1  # counted for the operator
    missed, taken = cloud.windows
    assert taken.at - missed.at == pytest.approx(10.0, abs=0.05)  # a slot of its own, not the missed one again


def test_a_call_that_keeps_missing_asks_for_more_lead_each_time_until_it_starts(buckets: SharedBuckets) -> None:
    # On a host so slow that every hand-over outlasts the process's largest lead
    # (StartLead.MAX_S), the call still starts: each retry asks twice its last hand-over.
    limit = RateLimit(rate=Rate(calls=1000, per_s=1.0))
    cloud = OnTimeCloud(miss=3)
    cloud.late_s = 0.4  # each miss: it reached its spawner 0.4 s after its slot
    cpi = RateLimitedCpi(cloud, limit, buckets)
    before = time.monotonic()
    assert cpi.snapshot_disk("a", {}) == "snap-a"
    leads = [window.at - before for window in cloud.windows]
    assert len(leads) == 4 and leads[-1] > 2 * StartLead.MAX_S, leads
    assert leads == sorted(leads)


def test_the_lead_grows_at_once_on_a_miss_and_settles_on_what_hand_overs_take() -> None:
    lead = StartLead()
    assert lead.seconds == StartLead.START_S
    lead.observe(0.1, missed=True)
    assert lead.seconds == pytest.approx(0.15)
    lead.observe(10.0, missed=True)
    assert lead.seconds == StartLead.MAX_S  # bounded: more lead is more latency and calls in flight
    for _ in range(StartLead.SAMPLES + StartLead.EVERY):  # a whole window of them, then its next estimate
        lead.observe(0.002)
    assert lead.seconds == StartLead.MIN_S  # a quiet host: 1.5 x 2 ms is below the floor
    for n in range(StartLead.SAMPLES + StartLead.EVERY):
        lead.observe(0.04 if n % 50 == 0 else 0.002)  # 2 % slow hand-overs: the 99th percentile
    assert lead.seconds == pytest.approx(0.06)


@pytest.mark.parametrize("spec,key", [
    ({"calls": 0}, "cpis.aws.rate_limit.calls"),
    ({"calls": "many"}, "cpis.aws.rate_limit.calls"),
    ({"calls": 5, "per": "soon"}, "cpis.aws.rate_limit.per"),
    ({"calls": 5, "burts": 2}, "cpis.aws.rate_limit.burts"),
    ({"methods": {"snapshot_disk": {"calls": 5, "per": "-1s"}}}, "cpis.aws.rate_limit.methods.snapshot_disk.per"),
    ({"calls": 5, "throttle_errors": "RequestLimitExceeded"}, "cpis.aws.rate_limit.throttle_errors"),
    ({}, "cpis.aws.rate_limit.calls"),
])
def test_a_bad_rate_limit_is_refused_naming_the_key(spec: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        CpiSpec.parse("aws", "cpis.aws", {"type": "external", "executable": "/bin/true", "rate_limit": spec})
    assert refused.value.key == key, str(refused.value)


def test_a_rate_limit_is_read_from_the_cpi_spec() -> None:
    spec = CpiSpec.parse("aws", "cpis.aws", {"type": "external", "executable": "/bin/true", "rate_limit": {
        "calls": 20, "per": "1s", "burst": 5, "throttle_errors": [THROTTLED],
        "methods": {"snapshot_disk": {"calls": 5, "per": "500ms"}}}})
    assert spec.rate_limit is not None
    assert spec.rate_limit.rate == Rate(calls=20, per_s=1.0, burst=5)
    assert spec.rate_limit.methods["snapshot_disk"] == Rate(calls=5, per_s=0.5)
    assert spec.rate_limit.throttle_errors == {THROTTLED}
