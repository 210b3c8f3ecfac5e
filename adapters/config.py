"""Configuration: one YAML file, overridden by SNAPLEDGER_* environment variables.

Snapshot keys are named as in the BOSH director manifest (`enable_snapshots`,
`snapshot_schedule`, `self_snapshot_schedule`) so an operator can copy them.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from snapledger.domain.retry import RetryPolicy


class ConfigError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key '{key}': {message}")
        self.key = key


@dataclass
class Config:
    data_dir: Path = Path(".snapledger")
    database: str = ""  # empty: SQLite file in data_dir
    host: str = "127.0.0.1"
    port: int = 25555
    director_name: str = "snapledger"
    director_uuid: str = ""
    enable_snapshots: bool | None = None  # None: leave the recorded setting alone
    # None: leave the recorded schedule alone (the ledger starts with BOSH's
    # defaults, 0 0 7 * * * UTC and 0 0 6 * * * UTC); "" or "off" turns it off.
    snapshot_schedule: str | None = None
    self_snapshot_schedule: str | None = None
    missed_fire_window_s: float = 3600.0
    # One CPI (`cpi:`) or several named ones (`cpis: {name: spec}`); see cpi_specs().
    cpi: dict[str, Any] = field(default_factory=lambda: {"type": "local"})
    cpis: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_cpi: str = ""  # required when several CPIs are configured
    self_cpi: str = ""  # the CPI that snapshots this host; default: default_cpi
    worker_max_in_flight: int = 4
    # A claimed CPI call whose worker is silent this long is in doubt (heartbeats every lease/3).
    worker_lease_s: float = 30.0
    poll_interval_s: float = 1.0
    # Group commit (docs/decisions.md #16): concurrent saves share one transaction.
    group_commit: bool = True
    group_commit_max_wait_s: float = 0.002  # linger under load only; an idle service commits at once
    group_commit_max_batch: int = 500
    auth_enabled: bool = True
    # [{name, secret_hash (argon2, `snapledger hash-secret`), scopes: [...]}]; when empty,
    # an admin credential is created in data_dir on first start.
    users: list[dict[str, Any]] = field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None
    # Issue 17: HTTPS by default with a CA of our own (adapters/tls.py); plain
    # HTTP only when asked for (behind a TLS proxy). More names for the certificate.
    tls_plain_http: bool = False
    tls_names: list[str] = field(default_factory=list)
    # The BOSH Director dialect's listener (api/director.py, decision 22); None: off.
    director_port: int | None = None
    ready_max_lag: int = 10_000
    metrics_port: int | None = None  # Prometheus endpoint of processes without the API  # /ready fails when a view is this many events behind
    # Job updates (the local agent): `<jobs_dir>/<job>/bin/drain`, default `<data_dir>/jobs`.
    jobs_dir: Path | None = None
    drain_timeout_s: float | None = None  # None: drain never times out (as BOSH)
    stop_command: str = ""  # for jobs without bin/stop; run with `sh -c`, SNAPLEDGER_JOB set
    stop_timeout_s: float = 300.0  # BOSH: monit stop gives up after 5 minutes
    drain_wait_scale: float = 1.0  # tests only: scales the waits drain scripts ask for
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.data_dir / 'ledger.sqlite').resolve()}"

    def cpi_specs(self) -> dict[str, "CpiSpec"]:
        """The configured CPIs by name, validated (ConfigError names the key)."""
        if self.cpis:
            raw = {name: (f"cpis.{name}", dict(spec or {})) for name, spec in self.cpis.items()}
        else:
            spec = dict(self.cpi)
            kind = spec.get("type", "local")
            name = spec.pop("name", None) or ("local" if kind == "local" else "default")
            raw = {name: ("cpi", spec)}
        return {name: CpiSpec.parse(name, key, spec) for name, (key, spec) in raw.items()}

    def default_cpi_name(self) -> str:
        names = list(self.cpi_specs())
        if self.default_cpi:
            if self.default_cpi not in names:
                raise ConfigError("default_cpi", f"no CPI named {self.default_cpi!r} (configured: {', '.join(names)})")
            return self.default_cpi
        if len(names) > 1:
            raise ConfigError("default_cpi", f"several CPIs are configured ({', '.join(names)}): name the default")
        return names[0]

    def self_cpi_name(self) -> str:
        if self.self_cpi and self.self_cpi not in self.cpi_specs():
            raise ConfigError("self_cpi", f"no CPI named {self.self_cpi!r}")
        return self.self_cpi or self.default_cpi_name()

    @property
    def uuid(self) -> str:
        # Stable across processes and restarts without shared state.
        return self.director_uuid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"snapledger:/{self.director_name}"))


@dataclass(frozen=True)
class CpiSpec:
    """One configured CPI: how to reach it and how hard to push it."""

    name: str
    type: str  # local | external
    executable: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 300.0
    max_in_flight: int = 4
    retry: RetryPolicy = RetryPolicy()
    disk_root: str = ""
    snapshot_root: str = ""
    self_disks: tuple[str, ...] | None = None
    # Repeat an in-doubt snapshot_disk? Off: the first call may have created a
    # cloud snapshot, and a second one would leak. The local CPI needs no
    # retry: its CIDs are deterministic, so it is asked whether the snapshot exists.
    retry_in_doubt: bool = False

    @classmethod
    def parse(cls, name: str, key: str, spec: dict[str, Any]) -> "CpiSpec":
        kind = spec.get("type", "local")
        if kind not in ("local", "external"):
            raise ConfigError(f"{key}.type", f"must be local or external, got {kind!r}")
        if kind == "external" and not spec.get("executable"):
            raise ConfigError(f"{key}.executable", "an external CPI needs the path of its executable")
        known = {"type", "name", "executable", "properties", "timeout", "max_in_flight", "retry", "disk_root",
                 "snapshot_root", "self_disks", "retry_in_doubt"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(known))})")
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
        return cls(name=name, type=kind, executable=str(spec.get("executable") or ""), properties=properties,
                   timeout_s=timeout_s, max_in_flight=max_in_flight, retry=policy,
                   disk_root=str(spec.get("disk_root") or ""), snapshot_root=str(spec.get("snapshot_root") or ""),
                   self_disks=tuple(self_disks) if self_disks is not None else None,
                   retry_in_doubt=bool(spec.get("retry_in_doubt", False)))


# YAML path -> (attribute, parser). Environment: SNAPLEDGER_<PATH upper, dots as _>.
_KEYS: dict[str, tuple[str, Any]] = {
    "data_dir": ("data_dir", Path),
    "database": ("database", str),
    "listen.host": ("host", str),
    "listen.port": ("port", int),
    "director.name": ("director_name", str),
    "director.uuid": ("director_uuid", str),
    "enable_snapshots": ("enable_snapshots", "bool"),
    "snapshot_schedule": ("snapshot_schedule", str),
    "self_snapshot_schedule": ("self_snapshot_schedule", str),
    "worker.max_in_flight": ("worker_max_in_flight", int),
    "worker.lease": ("worker_lease_s", float),
    "poll_interval": ("poll_interval_s", float),
    "group_commit.enabled": ("group_commit", "bool"),
    "group_commit.max_wait": ("group_commit_max_wait_s", float),
    "group_commit.max_batch": ("group_commit_max_batch", int),
    "missed_fire_window": ("missed_fire_window_s", float),
    "default_cpi": ("default_cpi", str),
    "self_cpi": ("self_cpi", str),
    "auth.enabled": ("auth_enabled", "bool"),
    "tls.cert": ("tls_cert", str),
    "tls.key": ("tls_key", str),
    "tls.plain_http": ("tls_plain_http", "bool"),
    "director.port": ("director_port", int),
    "ready.max_lag": ("ready_max_lag", int),
    "metrics.port": ("metrics_port", int),
    "jobs_dir": ("jobs_dir", Path),
    "drain_timeout": ("drain_timeout_s", "optional_seconds"),
    "stop_command": ("stop_command", str),
    "stop_timeout": ("stop_timeout_s", float),
    "drain_wait_scale": ("drain_wait_scale", float),
    "log.format": ("log_format", str),
    "log.level": ("log_level", str),
}


def _parse(key: str, parser: Any, raw: Any) -> Any:
    if parser == "optional_seconds":
        if raw is None or str(raw).strip().lower() in ("", "none", "off"):
            return None
        parser = float
    if parser == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {raw!r}")
    try:
        return parser(raw)
    except (TypeError, ValueError) as error:
        raise ConfigError(key, f"invalid value {raw!r}: {error}") from None


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None,
                **overrides: Any) -> Config:
    """File, then environment, then explicit overrides (command-line flags)."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as error:
            raise ConfigError("config", f"cannot read {path}: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError("config", f"{path} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError("config", f"{path} must hold a mapping")
    config = Config()
    for dotted, (attr, parser) in _KEYS.items():
        raw = _lookup(data, dotted)
        env_raw = environ.get("SNAPLEDGER_" + dotted.replace(".", "_").upper())
        if env_raw is not None:
            raw = env_raw
        if raw is not None:
            setattr(config, attr, _parse(dotted, parser, raw))
    if isinstance(data.get("cpi"), dict):
        config.cpi = dict(data["cpi"])
    names = _lookup(data, "tls.names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError("tls.names", "must be a list of host names or IP addresses")
        config.tls_names = list(names)
    users = _lookup(data, "auth.users")
    if users is not None:
        config.users = _parse_users(users)
    if data.get("cpis") is not None:
        if not isinstance(data["cpis"], dict) or not data["cpis"]:
            raise ConfigError("cpis", "must be a non-empty mapping of CPI name to its settings")
        config.cpis = {str(k): dict(v or {}) for k, v in data["cpis"].items()}
    for attr, value in overrides.items():
        if value is not None:
            setattr(config, attr, value)
    _validate(config)
    return config


def _parse_users(raw: Any) -> list[dict[str, Any]]:
    from snapledger.domain.names import NAME_PATTERN

    if not isinstance(raw, list):
        raise ConfigError("auth.users", "must be a list of {name, secret_hash, scopes}")
    users = []
    for i, entry in enumerate(raw):
        key = f"auth.users[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "secret_hash", "scopes"}:
            raise ConfigError(key, "must be a mapping with name, secret_hash and scopes")
        name, secret_hash, scopes = entry.get("name"), entry.get("secret_hash"), entry.get("scopes") or []
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"{key}.name", "letters, digits, '.', '_' or '-'")
        if not isinstance(secret_hash, str) or not secret_hash.startswith("$argon2"):
            raise ConfigError(f"{key}.secret_hash", "an argon2 hash (make one with `snapledger hash-secret`)")
        for scope in scopes:
            # BOSH's scopes too (issue 17): bosh.admin, bosh.read, bosh.teams.<team>.admin (api/auth.py maps them).
            if not re.fullmatch(r"snapledger\.(admin|read|deployments\.[A-Za-z0-9][A-Za-z0-9._-]*\.admin)"
                                r"|bosh\.(admin|read|teams\.[A-Za-z0-9][A-Za-z0-9._-]*\.admin)", str(scope)):
                raise ConfigError(f"{key}.scopes", f"unknown scope {scope!r}")
        users.append({"name": name, "secret_hash": secret_hash, "scopes": list(scopes)})
    return users


def _validate(config: Config) -> None:
    if not 0 < config.port < 65536:
        raise ConfigError("listen.port", f"must be 1-65535, got {config.port}")
    if config.log_format not in ("auto", "console", "json"):
        raise ConfigError("log.format", f"must be auto, console or json, got {config.log_format!r}")
    if config.worker_lease_s <= 0:
        raise ConfigError("worker.lease", "must be positive (seconds)")
    if config.drain_timeout_s is not None and config.drain_timeout_s <= 0:
        raise ConfigError("drain_timeout", "must be positive (seconds), or none")
    if config.stop_timeout_s <= 0:
        raise ConfigError("stop_timeout", "must be positive (seconds)")
    if config.drain_wait_scale < 0:
        raise ConfigError("drain_wait_scale", "must not be negative")
    if config.worker_max_in_flight < 1:
        raise ConfigError("worker.max_in_flight", "must be at least 1")
    from snapledger.domain.names import NAME_PATTERN

    for name in config.cpi_specs():
        if not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"cpis.{name}", "CPI names are letters, digits, '.', '_' or '-'")
    config.default_cpi_name()
    config.self_cpi_name()
    from snapledger.domain.cron import CronError, CronSchedule

    for key in ("snapshot_schedule", "self_snapshot_schedule"):
        value = getattr(config, key)
        if value is not None and value.strip().lower() not in ("", "off"):
            try:
                CronSchedule.parse(value)
            except CronError as error:
                raise ConfigError(key, str(error)) from None
    url = config.database_url
    if not (url.startswith("sqlite:") or url.startswith(("postgresql://", "postgres://"))):
        raise ConfigError("database", f"expected sqlite:///PATH or postgresql://..., got {url!r}")
