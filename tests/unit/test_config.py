from __future__ import annotations

from pathlib import Path

import pytest

from snapledger.adapters.config import ConfigError, load_config
from snapledger.adapters.store import parse_store_url


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("listen: {port: 26000, host: 0.0.0.0}\nenable_snapshots: true\n"
                    "snapshot_schedule: '0 0 3 * * * UTC'\ncpi: {type: local, disk_root: /d}\n")
    config = load_config(path, environ={"SNAPLEDGER_LISTEN_PORT": "27000"}, host="127.0.0.2")
    assert config.port == 27000 and config.host == "127.0.0.2"
    assert config.enable_snapshots is True and config.snapshot_schedule == "0 0 3 * * * UTC"
    assert config.cpi == {"type": "local", "disk_root": "/d"}


def test_defaults_are_boshs() -> None:
    config = load_config(None, environ={})
    assert config.enable_snapshots is None and config.port == 25555 and config.host == "127.0.0.1"
    assert config.snapshot_schedule is None and config.self_snapshot_schedule is None  # ledger keeps BOSH defaults
    assert config.database_url.startswith("sqlite:///") and config.database_url.endswith("ledger.sqlite")


@pytest.mark.parametrize("environ,key", [
    ({"SNAPLEDGER_LISTEN_PORT": "http"}, "listen.port"),
    ({"SNAPLEDGER_LISTEN_PORT": "70000"}, "listen.port"),
    ({"SNAPLEDGER_ENABLE_SNAPSHOTS": "maybe"}, "enable_snapshots"),
    ({"SNAPLEDGER_DATABASE": "mysql://x"}, "database"),
    ({"SNAPLEDGER_LOG_FORMAT": "xml"}, "log.format"),
])
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, environ=environ)
    assert error.value.key == key and key in str(error.value)


def test_bad_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("listen: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, environ={})


def test_store_urls() -> None:
    url = parse_store_url("postgresql://u:p%40ss@db:6543/led?schema=s1&sslmode=require")
    assert (url.kind, url.host, url.port, url.user, url.password, url.dbname, url.schema) == \
        ("postgres", "db", 6543, "u", "p@ss", "led", "s1")
    assert "sslmode=require" in url.conninfo() and "search_path=s1" in url.conninfo()
    assert parse_store_url("sqlite:///var/x.sqlite").sqlite_path == Path("/var/x.sqlite")
    with pytest.raises(ValueError):
        parse_store_url("postgresql://h/db?schema=bad;drop")


def test_several_named_cpis(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("cpis:\n"
                    "  aws: {type: external, executable: /var/vcap/jobs/aws_cpi/bin/cpi, properties: {region: x},\n"
                    "        max_in_flight: 2, retry: {attempts: 5, base_delay: 0.5, max_delay: 8}}\n"
                    "  local: {type: local}\n"
                    "default_cpi: aws\nself_cpi: local\n")
    config = load_config(path, environ={})
    specs = config.cpi_specs()
    assert sorted(specs) == ["aws", "local"]
    assert specs["aws"].max_in_flight == 2 and specs["aws"].properties == {"region": "x"}
    assert (specs["aws"].retry.attempts, specs["aws"].retry.base_delay_s, specs["aws"].retry.max_delay_s) == (5, 0.5, 8)
    assert config.default_cpi_name() == "aws" and config.self_cpi_name() == "local"


def test_the_only_cpi_is_the_default() -> None:
    config = load_config(None, environ={})
    assert list(config.cpi_specs()) == ["local"] and config.default_cpi_name() == "local"
    assert config.self_cpi_name() == "local"


@pytest.mark.parametrize("text,key", [
    ("cpis: {a: {type: local}, b: {type: local}}\n", "default_cpi"),
    ("cpis: {a: {type: local}}\ndefault_cpi: b\n", "default_cpi"),
    ("cpis: {a: {type: local}}\nself_cpi: b\n", "self_cpi"),
    ("cpis: {a: {type: external}}\n", "cpis.a.executable"),
    ("cpis: {a: {type: vsphere}}\n", "cpis.a.type"),
    ("cpis: {a: {type: local, colour: red}}\n", "cpis.a.colour"),
    ("cpis: {a: {type: local, max_in_flight: 0}}\n", "cpis.a.max_in_flight"),
    ("cpis: {a: {type: local, retry: {attempts: 0}}}\n", "cpis.a"),
    ("cpis: {'bad name': {type: local}}\n", "cpis.bad name"),
    ("cpis: []\n", "cpis"),
    ("cpi: {type: external}\n", "cpi.executable"),
])
def test_bad_cpi_settings_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.key == key, error.value


def test_group_commit_settings(tmp_path: Path) -> None:
    assert load_config(None, environ={}).group_commit is True  # on by default
    path = tmp_path / "c.yml"
    path.write_text("group_commit: {enabled: false, max_wait: 0.005, max_batch: 64}\n")
    config = load_config(path, environ={})
    assert (config.group_commit, config.group_commit_max_wait_s, config.group_commit_max_batch) == (False, 0.005, 64)
    assert load_config(None, environ={"SNAPLEDGER_GROUP_COMMIT_ENABLED": "false"}).group_commit is False


def test_api_processes_key_and_the_flag_share_one_bound(tmp_path: Path) -> None:
    from snapledger.adapters.config_values import MAX_API_PROCESSES
    from snapledger.api.cli_server import api

    path = tmp_path / "c.yml"
    path.write_text("api: {processes: 4}\n")
    assert load_config(path, environ={}).api_processes == 4
    assert load_config(None, environ={"SNAPLEDGER_API_PROCESSES": "3"}).api_processes == 3
    assert load_config(None, environ={}).api_processes == 1
    for bad in ("0", str(MAX_API_PROCESSES + 1)):
        with pytest.raises(ConfigError, match="'api.processes': must be 1-"):
            load_config(None, environ={"SNAPLEDGER_API_PROCESSES": bad})
    flag = next(p for p in api.params if p.name == "api_processes")
    assert (flag.type.min, flag.type.max) == (1, MAX_API_PROCESSES)  # type: ignore[attr-defined]
    # Each API process serves its own metrics on metrics.port + its number: all must be ports.
    with pytest.raises(ConfigError, match="metrics.port"):
        load_config(None, environ={"SNAPLEDGER_API_PROCESSES": "2", "SNAPLEDGER_METRICS_PORT": "65534"})
    assert load_config(None, environ={"SNAPLEDGER_METRICS_PORT": "65535"}).metrics_port == 65535
