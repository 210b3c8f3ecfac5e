"""The configured CPIs (`cpi:` for one, `cpis: {name: ...}` for several): one CpiSpec each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from snapledger.domain.errors import LedgerError
from snapledger.domain.json_types import JsonObject
from snapledger.domain.rate_limit import RateLimit
from snapledger.domain.retry import RetryPolicy

from .config_refusals import ConfigError, nearest


@dataclass(frozen=True)
class CpiSpec:
    """One configured CPI: how to reach it and how hard to push it."""

    name: str
    type: str  # local | external
    executable: str = ""
    properties: JsonObject = field(default_factory=dict)
    timeout_s: float = 300.0
    max_in_flight: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    disk_root: str = ""
    snapshot_root: str = ""
    self_disks: tuple[str, ...] | None = None
    # Repeat an in-doubt snapshot_disk? Off: the first call may have created a
    # cloud snapshot, and a second one would leak. The local CPI needs no
    # retry: its CIDs are deterministic, so it is asked whether the snapshot exists.
    retry_in_doubt: bool = False
    # Shared by every worker process of the event store (adapters/rate_limit.py).
    rate_limit: RateLimit | None = None

    @classmethod
    def parse(cls, name: str, key: str, spec: dict[str, Any]) -> CpiSpec:
        kind = spec.get("type", "local")
        if kind not in ("local", "external"):
            raise ConfigError(f"{key}.type", f"must be local or external, got {kind!r}")
        if kind == "external" and not spec.get("executable"):
            raise ConfigError(f"{key}.executable", "an external CPI needs the path of its executable")
        known = {"type", "name", "executable", "properties", "timeout", "max_in_flight", "retry", "disk_root",
                 "snapshot_root", "self_disks", "retry_in_doubt", "rate_limit"}
        unknown = sorted(set(spec) - known)
        if unknown:
            guess = nearest(unknown[0], sorted(known))
            hint = f"did you mean '{key}.{guess}'? " if guess else ""
            raise ConfigError(f"{key}.{unknown[0]}", f"unknown key ({hint}known: {', '.join(sorted(known))})")
        retry = spec.get("retry") or {}
        if not isinstance(retry, dict):
            raise ConfigError(f"{key}.retry", "must be a mapping {attempts, base_delay, max_delay}")
        try:
            policy = RetryPolicy(attempts=int(retry.get("attempts", 3)),
                                 base_delay_s=float(retry.get("base_delay", 1.0)),
                                 max_delay_s=float(retry.get("max_delay", 30.0)))
            max_in_flight = int(spec.get("max_in_flight", 4))
            timeout_s = float(spec.get("timeout", 300))
        except (TypeError, ValueError) as error:
            raise ConfigError(key, str(error)) from None
        if max_in_flight < 1:
            raise ConfigError(f"{key}.max_in_flight", "must be at least 1")
        if timeout_s <= 0:
            raise ConfigError(f"{key}.timeout", "must be positive (seconds)")
        properties = spec.get("properties") or {}
        if not isinstance(properties, dict):
            raise ConfigError(f"{key}.properties", "must be a mapping (merged into the CPI request context)")
        self_disks = spec.get("self_disks")
        rate_limit = None
        if spec.get("rate_limit") is not None:
            try:
                rate_limit = RateLimit.parse(spec["rate_limit"])
            except LedgerError as error:
                suffix = f".{error.field}" if error.field else ""
                raise ConfigError(f"{key}.rate_limit{suffix}", error.message) from None
        return cls(name=name, type=kind, executable=str(spec.get("executable") or ""), properties=properties,
                   timeout_s=timeout_s, max_in_flight=max_in_flight, retry=policy,
                   disk_root=str(spec.get("disk_root") or ""), snapshot_root=str(spec.get("snapshot_root") or ""),
                   self_disks=tuple(self_disks) if self_disks is not None else None,
                   retry_in_doubt=bool(spec.get("retry_in_doubt", False)), rate_limit=rate_limit)
