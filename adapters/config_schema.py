"""What can be configured: the `Config` every process is built from, and the
keys of the file (dotted YAML paths) with the attribute and parser of each.

Snapshot keys are named as in the BOSH director manifest (`enable_snapshots`,
`snapshot_schedule`, `self_snapshot_schedule`) so an operator can copy them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypedDict

from snapledger.domain.json_types import JsonObject
from snapledger.domain.settings import SCHEDULE_NAMES

from .config_cpis import CpiSpec
from .config_refusals import ConfigError


class UserEntry(TypedDict):
    """One configured user (`auth.users`), as config_values.parse_users checked it."""

    name: str
    secret_hash: str
    scopes: list[str]


# How a key's value is read: a type its value must have (an environment variable's
# text converted to it), or a name config_values.parse_value knows.
Converter: TypeAlias = type[int] | type[float] | type[str] | type[Path]
Parser: TypeAlias = Converter | Literal["bool", "schedule", "optional_seconds"]


@dataclass
class Config:
    data_dir: Path = Path(".snapledger")
    database: str = ""  # empty: SQLite file in data_dir
    host: str = "127.0.0.1"
    port: int = 25555
    # API processes on the one port (SO_REUSEPORT, api/api_processes.py, decision 37).
    api_processes: int = 1
    director_name: str = "snapledger"
    director_uuid: str = ""
    enable_snapshots: bool | None = None  # None: leave the recorded setting alone
    # None: leave the recorded schedule alone (the ledger starts with BOSH's
    # defaults, 0 0 7 * * * UTC and 0 0 6 * * * UTC); "" or "off" turns it off.
    snapshot_schedule: str | None = None
    self_snapshot_schedule: str | None = None
    retention_schedule: str | None = None  # None: leave the recorded one (default off)
    # Declared retention policies ({keep_last, keep_for, keep_clean} dicts); None: not declared.
    retention_default: JsonObject | None = None
    # Deployment name -> its policy, or None for "inherit the default".
    retention_deployments: dict[str, JsonObject | None] = field(default_factory=dict)
    # Runtime-settable key -> the file or SNAPLEDGER_* variable that sets it (see MANAGEABLE).
    managed: dict[str, str] = field(default_factory=dict)
    missed_fire_window_s: float = 3600.0
    # One CPI (`cpi:`) or several named ones (`cpis: {name: spec}`); see cpi_specs().
    # Any (issue 15 backlog): a non-string `name` is passed on as it is, to fail in validate();
    # typing it means refusing it in cpi_specs() instead.
    cpi: dict[str, Any] = field(default_factory=lambda: {"type": "local"})
    cpis: dict[str, dict[str, object]] = field(default_factory=dict)
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
    # Failed authentications a source address may make at once, then per second (api/auth.py).
    auth_failure_burst: int = 10
    auth_failure_rate_per_s: float = 0.1
    # [{name, secret_hash (argon2, `snapledger hash-secret`), scopes: [...]}]; when empty,
    # an admin credential is created in data_dir on first start.
    users: list[UserEntry] = field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None
    # Issue 17: HTTPS by default with a CA of our own (adapters/tls.py); plain
    # HTTP only when asked for (behind a TLS proxy). More names for the certificate.
    tls_plain_http: bool = False
    tls_names: list[str] = field(default_factory=list)
    # The BOSH Director dialect (api/director.py, decisions 22, 34): on the API port
    # unless disabled; on a listener of its own when director_port is set.
    director_enabled: bool = True
    director_port: int | None = None
    ready_max_lag: int = 10_000  # /ready fails when a view is this many events behind
    metrics_port: int | None = None  # Prometheus endpoint of processes without the API
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

    def cpi_specs(self) -> dict[str, CpiSpec]:
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


# YAML path -> (attribute, parser). Environment: SNAPLEDGER_<PATH upper, dots as _>.
KEYS: dict[str, tuple[str, Parser]] = {
    "data_dir": ("data_dir", Path),
    "database": ("database", str),
    "listen.host": ("host", str),
    "listen.port": ("port", int),
    "api.processes": ("api_processes", int),
    "director.name": ("director_name", str),
    "director.uuid": ("director_uuid", str),
    "enable_snapshots": ("enable_snapshots", "bool"),
    **{name: (name, "schedule") for name in SCHEDULE_NAMES},
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
    "auth.failure_burst": ("auth_failure_burst", int),
    "auth.failure_rate": ("auth_failure_rate_per_s", float),
    "tls.cert": ("tls_cert", str),
    "tls.key": ("tls_key", str),
    "tls.plain_http": ("tls_plain_http", "bool"),
    "director.port": ("director_port", int),
    "director.enabled": ("director_enabled", "bool"),
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
# Keys whose value is a structure checked by its own parser (not set from the environment).
STRUCTURED = ("cpi", "cpis", "auth.users", "retention.default", "retention.deployments", "tls.names")
ENV_PREFIX = "SNAPLEDGER_"


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


# The settings a runtime command can also change; when the configuration sets
# one, it is managed by the configuration (a runtime change is refused).
MANAGEABLE = ("enable_snapshots", *SCHEDULE_NAMES)
