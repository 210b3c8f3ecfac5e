"""Configuration of job updates: the local agent's keys, in YAML and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapledger.adapters.config import ConfigError, load_config
from snapledger.adapters.bootstrap import build_agent


def test_agent_keys_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("jobs_dir: /var/vcap/jobs\ndrain_timeout: 600\nstop_command: 'monit stop $SNAPLEDGER_JOB'\n")
    config = load_config(path, environ={"SNAPLEDGER_STOP_TIMEOUT": "30"})
    assert config.jobs_dir == Path("/var/vcap/jobs") and config.drain_timeout_s == 600.0
    assert config.stop_command == "monit stop $SNAPLEDGER_JOB" and config.stop_timeout_s == 30.0
    agent = build_agent(config)
    assert agent.jobs_dir == Path("/var/vcap/jobs") and agent.drain_timeout_s == 600.0
    assert agent.wait_scale == 1.0  # production waits are real


def test_defaults_are_boshs(tmp_path: Path) -> None:
    config = load_config(None, environ={}, data_dir=tmp_path)
    assert config.drain_timeout_s is None and config.stop_timeout_s == 300.0 and config.stop_command == ""
    assert build_agent(config).jobs_dir == tmp_path / "jobs"
    assert load_config(None, environ={"SNAPLEDGER_DRAIN_TIMEOUT": "none"}).drain_timeout_s is None


@pytest.mark.parametrize("environ,key", [
    ({"SNAPLEDGER_DRAIN_TIMEOUT": "soon"}, "drain_timeout"),
    ({"SNAPLEDGER_DRAIN_TIMEOUT": "0"}, "drain_timeout"),
    ({"SNAPLEDGER_STOP_TIMEOUT": "-1"}, "stop_timeout"),
    ({"SNAPLEDGER_DRAIN_WAIT_SCALE": "-1"}, "drain_wait_scale"),
])
def test_bad_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, environ=environ)
    assert error.value.key == key
