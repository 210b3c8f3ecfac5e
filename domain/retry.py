"""How a CPI call answered with `ok_to_retry: true` is tried again.

Exponential backoff with "full jitter" (a uniformly random delay up to the
exponential bound), so many workers retrying against one struggling IaaS API
spread out instead of hammering it in lock-step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from collections.abc import Callable


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # total attempts, the first one included
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must not be negative")

    def should_retry(self, attempt: int) -> bool:
        """After attempt number `attempt` (1-based) failed retryably."""
        return attempt < self.attempts

    def delay(self, attempt: int, rand: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait after attempt number `attempt` failed."""
        bound = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rand(0.0, bound)


NO_RETRY = RetryPolicy(attempts=1)
