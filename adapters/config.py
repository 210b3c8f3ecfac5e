"""Configuration: one YAML file, overridden by SNAPLEDGER_* environment variables.

Snapshot keys are named as in the BOSH director manifest (`enable_snapshots`,
`snapshot_schedule`, `self_snapshot_schedule`) so an operator can copy them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml


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
    cpi: dict[str, Any] = field(default_factory=lambda: {"type": "local"})
    worker_max_in_flight: int = 4
    poll_interval_s: float = 1.0
    log_format: str = "auto"  # auto | console | json
    log_level: str = "info"

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.data_dir / 'ledger.sqlite').resolve()}"

    @property
    def uuid(self) -> str:
        # Stable across processes and restarts without shared state.
        return self.director_uuid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"snapledger:/{self.director_name}"))


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
    "poll_interval": ("poll_interval_s", float),
    "missed_fire_window": ("missed_fire_window_s", float),
    "log.format": ("log_format", str),
    "log.level": ("log_level", str),
}


def _parse(key: str, parser: Any, raw: Any) -> Any:
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
    for attr, value in overrides.items():
        if value is not None:
            setattr(config, attr, value)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    if not 0 < config.port < 65536:
        raise ConfigError("listen.port", f"must be 1-65535, got {config.port}")
    if config.log_format not in ("auto", "console", "json"):
        raise ConfigError("log.format", f"must be auto, console or json, got {config.log_format!r}")
    if config.worker_max_in_flight < 1:
        raise ConfigError("worker.max_in_flight", "must be at least 1")
    if config.cpi.get("type", "local") not in ("local", "external"):
        raise ConfigError("cpi.type", f"must be local or external, got {config.cpi.get('type')!r}")
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
