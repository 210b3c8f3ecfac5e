"""A CPI's rate limits as the operator declares them.

`rate_limit: {calls: 20, per: 1s, burst: 5}` for all calls of a CPI, and the
same under `methods:` where the IaaS limits one API more tightly (AWS limits
`CreateSnapshot` apart from the rest). `throttle_errors` names the error types
with which the CPI says the IaaS throttled it. Enforcement lives in
adapters/rate_limit.py, shared by every worker process of one event store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Mapping

from .errors import LedgerError

_PER = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class InvalidRateLimit(LedgerError):
    code = "invalid_rate_limit"


@dataclass(frozen=True)
class Rate:
    """`calls` per `per_s` seconds; `burst` of them may start at once after a quiet spell."""

    calls: int
    per_s: float = 1.0
    burst: int = 1

    def __post_init__(self) -> None:
        if self.calls < 1:
            raise InvalidRateLimit("calls must be at least 1", field="calls")
        if self.per_s <= 0:
            raise InvalidRateLimit("per must be a positive duration (e.g. 1s, 500ms, 1m)", field="per")
        if self.burst < 1:
            raise InvalidRateLimit("burst must be at least 1", field="burst")

    @property
    def interval_s(self) -> float:
        return self.per_s / self.calls

    @property
    def tolerance_s(self) -> float:
        # The first call of a burst at the theoretical arrival time, the other
        # burst - 1 within this much before it.
        return (self.burst - 1) * self.interval_s

    @classmethod
    def parse(cls, spec: object, prefix: str = "") -> Rate:
        if not isinstance(spec, Mapping):
            raise InvalidRateLimit("must be a mapping {calls, per, burst}", field=prefix.rstrip(".") or None)
        unknown = sorted(set(spec) - {"calls", "per", "burst"})
        if unknown:
            raise InvalidRateLimit("unknown key (known: burst, calls, per)", field=f"{prefix}{unknown[0]}")
        calls = _whole(spec.get("calls"), f"{prefix}calls")
        burst = _whole(spec.get("burst", 1), f"{prefix}burst")
        try:
            return cls(calls=calls, per_s=parse_per(spec.get("per", "1s")), burst=burst)
        except InvalidRateLimit as error:
            raise InvalidRateLimit(error.message, field=f"{prefix}{error.field}") from None


def _whole(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRateLimit(f"must be a whole number, got {value!r}", field=field)
    return value


def parse_per(value: object) -> float:
    """`1s`, `500ms`, `1m`, `1h`, or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _PER.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise InvalidRateLimit(f"invalid duration {value!r}: use e.g. 1s, 500ms, 1m", field="per")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@dataclass(frozen=True)
class RateLimit:
    """One CPI's limits: for all its calls, and per method where the IaaS differs."""

    rate: Rate | None = None
    methods: Mapping[str, Rate] = field(default_factory=dict)
    throttle_errors: frozenset[str] = frozenset()
    recover_after_s: float = 10.0  # each quiet spell this long halves a slowdown

    def rates_for(self, method: str) -> list[tuple[str, Rate]]:
        """(bucket scope, rate) that a call of `method` must take a slot from."""
        rates = [("*", self.rate)] if self.rate is not None else []
        if method in self.methods:
            rates.append((method, self.methods[method]))
        return rates

    @classmethod
    def parse(cls, spec: object) -> RateLimit:
        if not isinstance(spec, Mapping):
            raise InvalidRateLimit("must be a mapping {calls, per, burst, methods, throttle_errors}")
        known = {"calls", "per", "burst", "methods", "throttle_errors", "recover_after"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise InvalidRateLimit(f"unknown key (known: {', '.join(sorted(known))})", field=unknown[0])
        overall = {k: spec[k] for k in ("calls", "per", "burst") if k in spec}
        rate = Rate.parse(overall) if overall else None
        methods = spec.get("methods") or {}
        if not isinstance(methods, Mapping):
            raise InvalidRateLimit("must be a mapping of CPI method to {calls, per, burst}", field="methods")
        errors = spec.get("throttle_errors") or []
        if not isinstance(errors, list) or not all(isinstance(e, str) and e for e in errors):
            raise InvalidRateLimit("must be a list of CPI error types", field="throttle_errors")
        if rate is None and not methods:
            raise InvalidRateLimit("needs calls (and per, burst) or methods", field="calls")
        return cls(rate=rate, methods={str(m): Rate.parse(r, f"methods.{m}.") for m, r in methods.items()},
                   throttle_errors=frozenset(errors),
                   recover_after_s=parse_per(spec.get("recover_after", "10s")))
