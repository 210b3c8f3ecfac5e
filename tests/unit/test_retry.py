from __future__ import annotations

import pytest

from snapledger.domain.retry import RetryPolicy


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    policy = RetryPolicy(attempts=6, base_delay_s=1.0, max_delay_s=5.0)
    upper = [policy.delay(n, rand=lambda lo, hi: hi) for n in range(1, 6)]
    assert upper == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert all(policy.delay(n, rand=lambda lo, hi: lo) == 0.0 for n in range(1, 6))
    delays = {round(policy.delay(3), 6) for _ in range(50)}
    assert len(delays) > 10 and all(0 <= d <= 4.0 for d in delays)  # spread, not lock-step


def test_attempts_are_bounded() -> None:
    policy = RetryPolicy(attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3)] == [True, True, False]
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
