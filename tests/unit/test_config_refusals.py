"""Configuration without surprises: every typo, wrong type and bad range is refused
at start, naming the file (or variable), the key and, for a typo, the nearest known key."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapledger.adapters.config import ConfigError, UnknownKey, load_config


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "snapledger.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,key,nearest", [
    ("enable_snapshot: true\n", "enable_snapshot", "enable_snapshots"),
    ("snapshot_schedul: '@daily'\n", "snapshot_schedul", "snapshot_schedule"),
    ("listen: {host: 0.0.0.0, prot: 80}\n", "listen.prot", "listen.port"),
    ("port: 8080\n", "port", "listen.port"),
    ("group_commit: {enabled: true, max_batches: 10}\n", "group_commit.max_batches", "group_commit.max_batch"),
    ("retention: {defaults: {keep_last: 3}}\n", "retention.defaults", "retention.default"),
    ("retention: {default: {keep_lats: 3}}\n", "retention.default.keep_lats", "retention.default.keep_last"),
    ("frobnicate: 1\n", "frobnicate", None),
])
def test_an_unknown_key_names_file_key_and_nearest(tmp_path: Path, text: str, key: str,
                                                     nearest: str | None) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(UnknownKey) as error:
        load_config(path, environ={})
    assert error.value.key == key and error.value.nearest == nearest
    hint = f" (did you mean '{nearest}'?)" if nearest else ""
    assert str(error.value) == f"{path}: unknown key '{key}'{hint}"


def test_an_unknown_variable_is_refused_with_the_nearest() -> None:
    with pytest.raises(UnknownKey) as error:
        load_config(None, environ={"SNAPLEDGER_ENABLE_SNAPSHOT": "true"})
    assert str(error.value) == ("environment: unknown variable 'SNAPLEDGER_ENABLE_SNAPSHOT' "
                                "(did you mean 'SNAPLEDGER_ENABLE_SNAPSHOTS'?)")
    with pytest.raises(UnknownKey, match="SNAPLEDGER_LISTEN_PROT.*SNAPLEDGER_LISTEN_PORT"):
        load_config(None, environ={"SNAPLEDGER_LISTEN_PROT": "80"})


def test_variables_that_are_not_configuration_are_left_alone() -> None:
    environ = {"SNAPLEDGER_URL": "http://x", "SNAPLEDGER_TOKEN": "t", "SNAPLEDGER_CONFIG": "/c.yml",
               "SNAPLEDGER_JOB": "db", "SNAPLEDGER_REQUIRE_POSTGRES": "1", "SNAPLEDGER_TEST_DSN": "x",
               "PATH": "/bin", "SNAPLEDGERX": "not ours"}
    assert load_config(None, environ=environ).port == 25555


@pytest.mark.parametrize("text,key,detail", [
    ("listen: {port: '8080'}\n", "listen.port", "expected an integer, got '8080'"),
    ("listen: {port: true}\n", "listen.port", "expected an integer, got True"),
    ("listen: {port: 0}\n", "listen.port", "must be 1-65535, got 0"),
    ("enable_snapshots: 'yes please'\n", "enable_snapshots", "expected true or false"),
    ("worker: {lease: fast}\n", "worker.lease", "expected a number, got 'fast'"),
    ("worker: {max_in_flight: 0}\n", "worker.max_in_flight", "must be at least 1"),
    ("poll_interval: 0\n", "poll_interval", "must be positive"),
    ("director: {name: [a, b]}\n", "director.name", "expected a string"),
    ("log: {level: loud}\n", "log.level", "must be one of debug, info"),
    ("listen: 8080\n", "listen", "must be a mapping of host, port"),
    ("snapshot_schedule: '0 0 25 * * * UTC'\n", "snapshot_schedule", "'25'"),
    ("retention: {default: {keep_last: 0}}\n", "retention.default.keep_last", "at least 1"),
    ("retention: {default: {keep_for: 2y}}\n", "retention.default.keep_for", "invalid duration '2y'"),
    ("retention: {deployments: {prod: 7}}\n", "retention.deployments.prod", "or inherit"),
    ("retention: {deployments: {'bad name': inherit}}\n", "retention.deployments.bad name", "deployment names"),
    ("cpis: {a: {type: local, max_in_flight: 0}}\n", "cpis.a.max_in_flight", "must be at least 1"),
    ("cpi: {type: local, timeuot: 30}\n", "cpi.timeuot", "unknown key (did you mean 'cpi.timeout'?"),
    ("cpi: local\n", "cpi", "must be a mapping"),
])
def test_a_wrong_type_or_range_names_the_file_and_key(tmp_path: Path, text: str, key: str, detail: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.key == key, error.value
    assert str(error.value).startswith(f"{path}: config key '{key}': "), error.value
    assert detail in str(error.value)


def test_a_wrong_variable_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, environ={"SNAPLEDGER_WORKER_LEASE": "-3"})
    assert str(error.value) == "SNAPLEDGER_WORKER_LEASE: config key 'worker.lease': must be positive (seconds)"


@pytest.mark.parametrize("text,message", [
    ("listen: [unclosed\n", "not valid YAML (line 2, column 1): expected ',' or ']'"),
    ("- a\n- b\n", "must hold a mapping of keys, got list"),
])
def test_a_file_that_does_not_parse_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert str(error.value).startswith(f"{path}: {message}"), error.value


def test_the_file_declares_every_runtime_setting_and_says_which(tmp_path: Path) -> None:
    path = _file(tmp_path, "enable_snapshots: true\nsnapshot_schedule: off\nretention_schedule: '@daily'\n"
                           "retention:\n  default: {keep_for: 30d}\n"
                           "  deployments: {prod: {keep_last: 7, keep_clean: true}, dev: inherit}\n")
    config = load_config(path, environ={"SNAPLEDGER_SELF_SNAPSHOT_SCHEDULE": "off"})
    assert config.snapshot_schedule == "off"  # YAML's bare `off` (false) means off, not "False"
    assert config.retention_schedule == "@daily"
    assert config.retention_default == {"keep_last": None, "keep_for": "30d", "keep_clean": False}
    assert config.retention_deployments == {"prod": {"keep_last": 7, "keep_for": None, "keep_clean": True},
                                            "dev": None}
    assert config.managed == {
        "enable_snapshots": str(path), "snapshot_schedule": str(path), "retention_schedule": str(path),
        "self_snapshot_schedule": "SNAPLEDGER_SELF_SNAPSHOT_SCHEDULE", "retention.default": str(path),
        "retention.deployments.prod": str(path), "retention.deployments.dev": str(path)}
    assert load_config(None, environ={}).managed == {}  # nothing declared: all runtime-settable


README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_block(kind: str) -> str:
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{kind}\n", 1)[1].split("```", 1)[0]


def test_the_readme_configuration_loads_and_declares_what_it_says(tmp_path: Path) -> None:
    path = _file(tmp_path, _readme_block("yaml"))
    config = load_config(path, environ={})
    assert sorted(config.managed) == ["enable_snapshots", "retention.default", "retention.deployments.dev",
                                      "retention.deployments.prod", "retention_schedule", "self_snapshot_schedule",
                                      "snapshot_schedule"]
    assert config.retention_deployments["dev"] is None and config.self_snapshot_schedule == "off"


def test_the_readme_error_lines_are_what_the_service_prints(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = [line.removeprefix("Error: ") for line in _readme_block("text").splitlines()]
    got = []
    for text, environ in [("enable_snapshot: true\n", {}), ("", {"SNAPLEDGER_LISTEN_PROT": "80"}),
                          ("listen: {port: '8080'}\n", {}), ("", {"SNAPLEDGER_WORKER_LEASE": "-1"})]:
        Path("snapledger.yml").write_text(text)
        with pytest.raises(ConfigError) as error:
            load_config("snapledger.yml", environ=environ)
        got.append(str(error.value))
    assert got == expected


@pytest.mark.parametrize("text,key", [
    ('retention: {deployments: {"prod\\n": {keep_last: 3}}}\n', "retention.deployments.prod\n"),
    ('cpis: {"aws\\n": {type: local}}\n', "cpis.aws\n"),
    ('auth: {users: [{name: "ops\\n", secret_hash: "$argon2id$x", scopes: [snapledger.admin]}]}\n',
     "auth.users[0].name"),
])
def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path, text: str, key: str) -> None:
    """Issue 16 item 7 where names enter through the file: a whole-string match,
    not `$` (which matches before a final newline)."""
    with pytest.raises(ConfigError) as error:
        load_config(_file(tmp_path, text), environ={})
    assert error.value.key == key, error.value
