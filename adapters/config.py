"""Configuration: one YAML file, overridden by SNAPLEDGER_* environment variables.

Nothing is ignored: an unknown key (in the file or as a SNAPLEDGER_* variable)
is refused with the nearest known one, a value of the wrong type or range
names its key and where it was set. The settings that can also be changed at
run time (`MANAGEABLE`) are *managed* by the configuration when it sets them:
`Config.managed` says by which file or variable, and the ledger refuses a
runtime change of them (docs/decisions.md #24).

This module loads (file, environment, overrides, in that order); what can be
configured is in config_schema.py, the CPIs' sections in config_cpis.py, value
checks in config_values.py, how a refusal reads in config_refusals.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from .config_cpis import CpiSpec
from .config_refusals import BadConfigFile, ConfigError, UnknownKey, nearest
from .config_schema import ENV_PREFIX, KEYS, MANAGEABLE, STRUCTURED, Config, UserEntry, env_name
from .config_values import load_retention, lookup, parse_users, parse_value, validate

# What callers import from here: the loader and the types it returns and raises.
__all__ = ["BadConfigFile", "Config", "ConfigError", "CpiSpec", "UnknownKey", "UserEntry", "load_config"]

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


def _sections() -> set[str]:
    """Every dotted prefix of a known key: the mappings a file may hold."""
    return {".".join(key.split(".")[:i]) for key in (*KEYS, *STRUCTURED) for i in range(1, key.count(".") + 1)}


def _check_file_keys(data: Mapping[str, object], source: str) -> None:
    sections = _sections()
    known = sorted({*KEYS, *STRUCTURED, *sections})

    def walk(node: Mapping[str, object], prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if key in KEYS or key in STRUCTURED:
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
    names = {env_name(key): key for key in KEYS}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in names or variable in OTHER_VARIABLES:
            continue
        if variable.startswith(OTHER_PREFIXES):
            continue
        raise UnknownKey(variable, nearest(variable, sorted(names)), "environment", what="variable")


def _read_file(path: str | Path) -> dict[str, object]:
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
                **overrides: object) -> Config:
    """File, then environment, then explicit overrides (command-line flags)."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else ""
    data = _read_file(path) if path else {}
    _check_file_keys(data, source)
    _check_env_names(environ)
    config = Config()
    sources: dict[str, str] = {}  # key -> where it was set, for errors found after parsing
    for dotted, (attr, parser) in KEYS.items():
        raw, where = lookup(data, dotted), source
        variable = env_name(dotted)
        if environ.get(variable) is not None:
            raw, where = environ[variable], variable
        if raw is not None:
            setattr(config, attr, parse_value(dotted, parser, raw, where))
            sources[dotted] = where
            if dotted in MANAGEABLE:
                config.managed[dotted] = where
    if data.get("cpi") is not None:
        if not isinstance(data["cpi"], dict):
            raise ConfigError("cpi", "must be a mapping {type, ...} (see cpis: for several)", source)
        config.cpi = dict(data["cpi"])
    names = lookup(data, "tls.names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError("tls.names", "must be a list of host names or IP addresses")
        config.tls_names = list(names)
    users = lookup(data, "auth.users")
    if users is not None:
        config.users = parse_users(users)
    if data.get("cpis") is not None:
        if not isinstance(data["cpis"], dict) or not data["cpis"]:
            raise ConfigError("cpis", "must be a non-empty mapping of CPI name to its settings", source)
        config.cpis = {str(k): dict(v or {}) for k, v in data["cpis"].items()}
    load_retention(config, data, source)
    attrs = {attr: dotted for dotted, (attr, _) in KEYS.items()}
    for attr, value in overrides.items():
        if value is not None:
            setattr(config, attr, value)
            if attr in attrs:
                sources[attrs[attr]] = f"--{attr.replace('_', '-')}"
    try:
        validate(config)
    except ConfigError as error:
        where = error.source or sources.get(error.key) or sources.get(error.key.split(".")[0]) or source
        if where and not error.source:
            raise ConfigError(error.key, error.detail, where) from None
        raise
    return config


