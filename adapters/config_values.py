"""Checking configured values: each key's type (a file's value must already have
it, a variable's text is converted), the structured sections (retention,
users), and the ranges and references checked once everything is read."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from snapledger.domain.cron import CronError, CronSchedule
from snapledger.domain.json_types import JsonObject
from snapledger.domain.names import NAME_PATTERN
from snapledger.domain.retention import InvalidPolicy, RetentionPolicy
from snapledger.domain.settings import SCHEDULE_NAMES

from .config_refusals import ConfigError, UnknownKey, nearest
from .config_schema import ENV_PREFIX, Config, Converter, Parser, UserEntry


_TYPE_NAMES: dict[Converter, str] = {int: "an integer", float: "a number", str: "a string", Path: "a path"}


def parse_value(key: str, parser: Parser, raw: object, source: str | None = None) -> object:
    """A file's value must already have the key's type (YAML typed it); an
    environment variable's text is converted."""
    text = isinstance(raw, str) and source is not None and source.startswith(ENV_PREFIX)
    if parser == "schedule" and raw is False:  # YAML 1.1 reads a bare `off` as false
        return "off"
    if parser == "optional_seconds" and (raw is None or raw is False or
                                         str(raw).strip().lower() in ("", "none", "off")):
        return None
    if parser == "bool":
        if isinstance(raw, bool):
            return raw
        value = str(raw).strip().lower()
        if text and value in ("1", "true", "yes", "on"):
            return True
        if text and value in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected true or false, got {raw!r}", source)
    convert: Converter = str if parser == "schedule" else float if parser == "optional_seconds" else parser
    if not text and source is not None:
        allowed: tuple[type, ...] = {int: (int,), float: (int, float)}.get(convert, (str,))
        if isinstance(raw, bool) or not isinstance(raw, allowed):
            raise ConfigError(key, f"expected {_TYPE_NAMES[convert]}, got {raw!r}", source)
    try:
        return _convert(convert, raw)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected {_TYPE_NAMES.get(convert, convert.__name__)}, got {raw!r}",
                          source) from None


def _convert(convert: Converter, raw: object) -> object:
    """`convert(raw)`; the TypeError those constructors raise for a value they do not take is
    raised here before the call, for the values mypy does not see they take."""
    if convert is str:
        return str(raw)
    if convert is Path:
        if not isinstance(raw, (str, os.PathLike)):
            raise TypeError(raw)
        return Path(raw)
    if not isinstance(raw, (str, bytes, int, float)):
        raise TypeError(raw)
    return int(raw) if convert is int else float(raw)


_POLICY_KEYS = ("keep_last", "keep_for", "keep_clean")


def load_retention(config: Config, data: Mapping[str, object], source: str) -> None:
    """`retention: {default: POLICY, deployments: {NAME: POLICY or inherit}}`; each one
    declared is managed by the file."""
    default = lookup(data, "retention.default")
    if default is not None:
        config.retention_default = _parse_policy("retention.default", default, source)
        config.managed["retention.default"] = source
    deployments = lookup(data, "retention.deployments")
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


def lookup(data: Mapping[str, object], dotted: str) -> object:
    node: object = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _parse_policy(key: str, raw: object, source: str) -> JsonObject:
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


def parse_users(raw: object) -> list[UserEntry]:
    if not isinstance(raw, list):
        raise ConfigError("auth.users", "must be a list of {name, secret_hash, scopes}")
    users: list[UserEntry] = []
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
# Each API process holds its own database connections (the store's pool, the views',
# a listener): 64 of them would already take most of a default PostgreSQL's 100.
MAX_API_PROCESSES = 64


def validate(config: Config) -> None:
    if not 0 < config.port < 65536:
        raise ConfigError("listen.port", f"must be 1-65535, got {config.port}")
    if config.metrics_port is not None and not 0 < config.metrics_port < 65536:
        raise ConfigError("metrics.port", f"must be 1-65535, got {config.metrics_port}")
    if not 1 <= config.api_processes <= MAX_API_PROCESSES:
        raise ConfigError("api.processes", f"must be 1-{MAX_API_PROCESSES}, got {config.api_processes}")
    if config.api_processes > 1 and config.metrics_port is not None and \
            config.metrics_port + config.api_processes > 65535:
        raise ConfigError("metrics.port", f"API process {config.api_processes} would serve its metrics on "
                          f"{config.metrics_port + config.api_processes} (metrics.port + its number): too high")
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
    for name in config.cpi_specs():
        if not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"cpis.{name}", "CPI names are letters, digits, '.', '_' or '-'")
    config.default_cpi_name()
    config.self_cpi_name()
    for key in SCHEDULE_NAMES:
        value = getattr(config, key)
        if value is not None and value.strip().lower() not in ("", "off"):
            try:
                CronSchedule.parse(value)
            except CronError as error:
                raise ConfigError(key, str(error)) from None
    url = config.database_url
    if not url.startswith(("sqlite:", "postgresql://", "postgres://")):
        raise ConfigError("database", f"expected sqlite:///PATH or postgresql://..., got {url!r}")
