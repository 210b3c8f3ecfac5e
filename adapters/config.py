"""Configuration: one YAML file, overridden by SNAPLEDGER_* environment variables.

Snapshot keys are named as in the BOSH director manifest (`enable_snapshots`,
`snapshot_schedule`, `self_snapshot_schedule`) so an operator can copy them.

Nothing is ignored: an unknown key (in the file or as a SNAPLEDGER_* variable)
is refused with the nearest known one, a value of the wrong type or range
names its key and where it was set. The settings that can also be changed at
run time (`MANAGEABLE`) are *managed* by the configuration when it sets them:
`Config.managed` says by which file or variable, and the ledger refuses a
runtime change of them (docs/decisions.md #24).
"""

from __future__ import annotations

import difflib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from snapledger.domain.errors import LedgerError
from snapledger.domain.rate_limit import RateLimit
from snapledger.domain.retry import RetryPolicy


class ConfigError(ValueError):
    """A refused configuration; `source` is the file or variable it came from."""

    def __init__(self, key: str, message: str, source: str | None = None) -> None:
        super().__init__(f"{source + ': ' if source else ''}config key '{key}': {message}")
        self.key = key
        self.detail = message
        self.source = source


class BadConfigFile(ConfigError):
    """The file itself: unreadable, not YAML, not a mapping."""

    def __init__(self, path: str | Path, message: str) -> None:
        ValueError.__init__(self, f"{path}: {message}")
        self.key, self.detail, self.source = "config", message, str(path)


class UnknownKey(ConfigError):
    def __init__(self, key: str, nearest: str | None, source: str, what: str = "key") -> None:
        hint = f" (did you mean '{nearest}'?)" if nearest else ""
        ValueError.__init__(self, f"{source}: unknown {what} '{key}'{hint}")
        self.key, self.nearest, self.source = key, nearest, source


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
    retention_schedule: str | None = None  # None: leave the recorded one (default off)
    # Declared retention policies ({keep_last, keep_for, keep_clean} dicts); None: not declared.
    retention_default: dict[str, Any] | None = None
    # Deployment name -> its policy, or None for "inherit the default".
    retention_deployments: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # Runtime-settable key -> the file or SNAPLEDGER_* variable that sets it (see MANAGEABLE).
    managed: dict[str, str] = field(default_factory=dict)
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
    # Failed authentications a source address may make at once, then per second (api/auth.py).
    auth_failure_burst: int = 10
    auth_failure_rate_per_s: float = 0.1
    # [{name, secret_hash (argon2, `snapledger hash-secret`), scopes: [...]}]; when empty,
    # an admin credential is created in data_dir on first start.
    users: list[dict[str, Any]] = field(default_factory=list)
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
    # Shared by every worker process of the event store (adapters/rate_limit.py).
    rate_limit: RateLimit | None = None

    @classmethod
    def parse(cls, name: str, key: str, spec: dict[str, Any]) -> "CpiSpec":
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


# YAML path -> (attribute, parser). Environment: SNAPLEDGER_<PATH upper, dots as _>.
_KEYS: dict[str, tuple[str, Any]] = {
    "data_dir": ("data_dir", Path),
    "database": ("database", str),
    "listen.host": ("host", str),
    "listen.port": ("port", int),
    "director.name": ("director_name", str),
    "director.uuid": ("director_uuid", str),
    "enable_snapshots": ("enable_snapshots", "bool"),
    "snapshot_schedule": ("snapshot_schedule", "schedule"),
    "self_snapshot_schedule": ("self_snapshot_schedule", "schedule"),
    "retention_schedule": ("retention_schedule", "schedule"),
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
_STRUCTURED = ("cpi", "cpis", "auth.users", "retention.default", "retention.deployments", "tls.names")
# The settings a runtime command can also change; when the configuration sets
# one, it is managed by the configuration (a runtime change is refused).
MANAGEABLE = ("enable_snapshots", "snapshot_schedule", "self_snapshot_schedule", "retention_schedule")

ENV_PREFIX = "SNAPLEDGER_"
# SNAPLEDGER_* variables that are not configuration keys: the CLI client's, what
# the agent sets for drain and stop scripts, and the tests' and benchmarks' own.
OTHER_VARIABLES = frozenset({
    "SNAPLEDGER_CONFIG", "SNAPLEDGER_URL", "SNAPLEDGER_USER", "SNAPLEDGER_SECRET", "SNAPLEDGER_TOKEN",
    "SNAPLEDGER_CREDENTIALS", "SNAPLEDGER_CA_CERT", "SNAPLEDGER_DEPLOYMENT", "SNAPLEDGER_JOB",
    "SNAPLEDGER_INSTANCE", "SNAPLEDGER_INSTANCE_ID", "SNAPLEDGER_CRASH_AT", "SNAPLEDGER_PG_REPORT",
    "SNAPLEDGER_PG_BIN", "SNAPLEDGER_SCHEMATHESIS_EXAMPLES", "SNAPLEDGER_REPLICA_TEST_SECONDS",
    "SNAPLEDGER_FUZZ_PER_ROUTE",
})
OTHER_PREFIXES = ("SNAPLEDGER_TEST_", "SNAPLEDGER_REQUIRE_", "SNAPLEDGER_BENCH_", "SNAPLEDGER_FUGIT_")


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _sections() -> set[str]:
    """Every dotted prefix of a known key: the mappings a file may hold."""
    return {".".join(key.split(".")[:i]) for key in (*_KEYS, *_STRUCTURED) for i in range(1, key.count(".") + 1)}


def nearest(key: str, known: list[str]) -> str | None:
    """The known key a typo most likely meant: a close spelling, else the same
    name in another section (`port` -> `listen.port`)."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaf = key.rsplit(".", 1)[-1]
    # A bare `port` or `host` means the API's own (not the Director's or metrics').
    same_leaf = sorted((k for k in known if k.rsplit(".", 1)[-1] == leaf),
                       key=lambda k: (not k.startswith("listen."), k))
    return same_leaf[0] if same_leaf else None


def _check_file_keys(data: Mapping[str, Any], source: str) -> None:
    sections = _sections()
    known = sorted({*_KEYS, *_STRUCTURED, *sections})

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if key in _KEYS or key in _STRUCTURED:
                continue
            if key not in sections:
                raise UnknownKey(key, nearest(key, known), source)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                children = sorted(k[len(key) + 1:] for k in known if k.startswith(key + ".") and
                                  "." not in k[len(key) + 1:])
                raise ConfigError(key, f"must be a mapping of {', '.join(children)}", source)
            walk(value, key + ".")

    walk(data, "")


def _check_env_names(environ: Mapping[str, str]) -> None:
    names = {env_name(key): key for key in _KEYS}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in names or variable in OTHER_VARIABLES:
            continue
        if variable.startswith(OTHER_PREFIXES):
            continue
        raise UnknownKey(variable, nearest(variable, sorted(names)), "environment", what="variable")


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", Path: "a path"}


def _parse(key: str, parser: Any, raw: Any, source: str | None = None) -> Any:
    """A file's value must already have the key's type (YAML typed it); an
    environment variable's text is converted."""
    text = isinstance(raw, str) and source is not None and source.startswith(ENV_PREFIX)
    if parser == "schedule":
        if raw is False:  # YAML 1.1 reads a bare `off` as false
            return "off"
        parser = str
    if parser == "optional_seconds":
        if raw is None or raw is False or str(raw).strip().lower() in ("", "none", "off"):
            return None
        parser = float
    if parser == "bool":
        if isinstance(raw, bool):
            return raw
        value = str(raw).strip().lower()
        if text and value in ("1", "true", "yes", "on"):
            return True
        if text and value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {raw!r}", source)
    if not text and source is not None:
        allowed: tuple[type, ...] = {int: (int,), float: (int, float)}.get(parser, (str,))
        if isinstance(raw, bool) or not isinstance(raw, allowed):
            raise ConfigError(key, f"expected {_TYPE_NAMES[parser]}, got {raw!r}", source)
    try:
        return parser(raw)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected {_TYPE_NAMES.get(parser, parser.__name__)}, got {raw!r}",
                          source) from None


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _read_file(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise BadConfigFile(path, f"cannot read the configuration: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BadConfigFile(path, f"not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadConfigFile(path, f"must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None,
                **overrides: Any) -> Config:
    """File, then environment, then explicit overrides (command-line flags)."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else ""
    data = _read_file(path) if path else {}
    _check_file_keys(data, source)
    _check_env_names(environ)
    config = Config()
    sources: dict[str, str] = {}  # key -> where it was set, for errors found after parsing
    for dotted, (attr, parser) in _KEYS.items():
        raw, where = _lookup(data, dotted), source
        variable = env_name(dotted)
        if environ.get(variable) is not None:
            raw, where = environ[variable], variable
        if raw is not None:
            setattr(config, attr, _parse(dotted, parser, raw, where))
            sources[dotted] = where
            if dotted in MANAGEABLE:
                config.managed[dotted] = where
    if data.get("cpi") is not None:
        if not isinstance(data["cpi"], dict):
            raise ConfigError("cpi", "must be a mapping {type, ...} (see cpis: for several)", source)
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
            raise ConfigError("cpis", "must be a non-empty mapping of CPI name to its settings", source)
        config.cpis = {str(k): dict(v or {}) for k, v in data["cpis"].items()}
    _load_retention(config, data, source)
    attrs = {attr: dotted for dotted, (attr, _) in _KEYS.items()}
    for attr, value in overrides.items():
        if value is not None:
            setattr(config, attr, value)
            if attr in attrs:
                sources[attrs[attr]] = f"--{attr.replace('_', '-')}"
    try:
        _validate(config)
    except ConfigError as error:
        where = error.source or sources.get(error.key) or sources.get(error.key.split(".")[0]) or source
        if where and not error.source:
            raise ConfigError(error.key, error.detail, where) from None
        raise
    return config


_POLICY_KEYS = ("keep_last", "keep_for", "keep_clean")


def _load_retention(config: Config, data: Mapping[str, Any], source: str) -> None:
    """`retention: {default: POLICY, deployments: {NAME: POLICY or inherit}}`; each one
    declared is managed by the file."""
    from snapledger.domain.names import NAME_PATTERN

    default = _lookup(data, "retention.default")
    if default is not None:
        config.retention_default = _parse_policy("retention.default", default, source)
        config.managed["retention.default"] = source
    deployments = _lookup(data, "retention.deployments")
    if deployments is None:
        return
    if not isinstance(deployments, dict):
        raise ConfigError("retention.deployments", "must be a mapping of deployment name to its policy", source)
    for name, raw in deployments.items():
        key = f"retention.deployments.{name}"
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(key, "deployment names are letters, digits, '.', '_' or '-'", source)
        config.retention_deployments[name] = None if raw == "inherit" else _parse_policy(key, raw, source)
        config.managed[key] = source


def _parse_policy(key: str, raw: Any, source: str) -> dict[str, Any]:
    from snapledger.domain.retention import InvalidPolicy, RetentionPolicy

    if not isinstance(raw, dict):
        inherit = " or inherit" if key.startswith("retention.deployments.") else ""
        raise ConfigError(key, f"must be a mapping of {', '.join(_POLICY_KEYS)}{inherit}", source)
    for name in raw:
        if name not in _POLICY_KEYS:
            raise UnknownKey(f"{key}.{name}", nearest(f"{key}.{name}", [f"{key}.{k}" for k in _POLICY_KEYS]),
                             source)
    keep_last, keep_for, keep_clean = raw.get("keep_last"), raw.get("keep_for"), raw.get("keep_clean", False)
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int)):
        raise ConfigError(f"{key}.keep_last", f"expected an integer, got {keep_last!r}", source)
    if keep_for is not None and not isinstance(keep_for, str):
        raise ConfigError(f"{key}.keep_for", f"expected a duration such as 7d, got {keep_for!r}", source)
    if not isinstance(keep_clean, bool):
        raise ConfigError(f"{key}.keep_clean", f"expected true or false, got {keep_clean!r}", source)
    try:
        return RetentionPolicy(keep_last=keep_last, keep_for=keep_for, keep_clean=keep_clean).as_dict()
    except InvalidPolicy as error:
        raise ConfigError(f"{key}.{error.field}", error.message, source) from None


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


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _validate(config: Config) -> None:
    if not 0 < config.port < 65536:
        raise ConfigError("listen.port", f"must be 1-65535, got {config.port}")
    if config.metrics_port is not None and not 0 < config.metrics_port < 65536:
        raise ConfigError("metrics.port", f"must be 1-65535, got {config.metrics_port}")
    if config.director_port is not None and not config.director_enabled:
        raise ConfigError("director.port", "is set but director.enabled is false (--no-director): set one of them")
    if config.log_format not in ("auto", "console", "json"):
        raise ConfigError("log.format", f"must be auto, console or json, got {config.log_format!r}")
    if config.log_level.lower() not in LOG_LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}")
    if config.poll_interval_s <= 0:
        raise ConfigError("poll_interval", "must be positive (seconds)")
    if config.missed_fire_window_s < 0:
        raise ConfigError("missed_fire_window", "must not be negative (seconds)")
    if config.group_commit_max_wait_s < 0:
        raise ConfigError("group_commit.max_wait", "must not be negative (seconds)")
    if config.group_commit_max_batch < 1:
        raise ConfigError("group_commit.max_batch", "must be at least 1")
    if config.ready_max_lag < 0:
        raise ConfigError("ready.max_lag", "must not be negative (events)")
    if config.worker_lease_s <= 0:
        raise ConfigError("worker.lease", "must be positive (seconds)")
    if config.drain_timeout_s is not None and config.drain_timeout_s <= 0:
        raise ConfigError("drain_timeout", "must be positive (seconds), or none")
    if config.stop_timeout_s <= 0:
        raise ConfigError("stop_timeout", "must be positive (seconds)")
    if config.drain_wait_scale < 0:
        raise ConfigError("drain_wait_scale", "must not be negative")
    if config.auth_failure_burst < 1 or config.auth_failure_rate_per_s <= 0:
        raise ConfigError("auth.failure_burst" if config.auth_failure_burst < 1 else "auth.failure_rate",
                          "must be positive")
    if config.worker_max_in_flight < 1:
        raise ConfigError("worker.max_in_flight", "must be at least 1")
    from snapledger.domain.names import NAME_PATTERN

    for name in config.cpi_specs():
        if not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"cpis.{name}", "CPI names are letters, digits, '.', '_' or '-'")
    config.default_cpi_name()
    config.self_cpi_name()
    from snapledger.domain.cron import CronError, CronSchedule

    for key in ("snapshot_schedule", "self_snapshot_schedule", "retention_schedule"):
        value = getattr(config, key)
        if value is not None and value.strip().lower() not in ("", "off"):
            try:
                CronSchedule.parse(value)
            except CronError as error:
                raise ConfigError(key, str(error)) from None
    url = config.database_url
    if not (url.startswith("sqlite:") or url.startswith(("postgresql://", "postgres://"))):
        raise ConfigError("database", f"expected sqlite:///PATH or postgresql://..., got {url!r}")
