"""The deployment files in ops/ are tested, not only written: the systemd
units pass `systemd-analyze verify` and an offline security review, run the
right role as a dedicated user with the data directory and a restart
policy; the example production configuration loads with the project's own
config loader. Skipped without systemd-analyze unless
SNAPLEDGER_REQUIRE_SYSTEMD_ANALYZE=1 (as CI sets it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapledger.adapters.config import load_config
from snapledger.adapters.store import parse_store_url

OPS = Path(__file__).resolve().parents[2] / "ops"
UNITS = sorted((OPS / "systemd").glob("snapledger*.service"))
ROLES = {"snapledger.service": "serve", "snapledger-api.service": "api", "snapledger-worker.service": "worker",
         "snapledger-projector.service": "projector", "snapledger-scheduler.service": "scheduler"}
INSTALLED = "/opt/snapledger/bin/snapledger"  # where the README installs it
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None and os.environ.get("SNAPLEDGER_REQUIRE_SYSTEMD_ANALYZE") != "1",
                                   reason="systemd-analyze not installed")


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def installed_copies(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this test's snapledger executable
    (verify checks the executable exists; /opt/snapledger is not installed
    here). Nothing else is changed."""
    executable = str(Path(sys.executable).parent / "snapledger")
    copies = []
    for unit in [*UNITS, OPS / "systemd" / "snapledger.target"]:
        text = unit.read_text()
        if unit.suffix == ".service":
            assert text.count(INSTALLED) == 1, unit.name
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, executable))
        copies.append(tmp_path / unit.name)
    return copies


def test_one_unit_per_role() -> None:
    assert sorted(u.name for u in UNITS) == sorted(ROLES)
    for unit in UNITS:
        d = directives(unit)
        assert d["ExecStart"] == [f"{INSTALLED} {ROLES[unit.name]}"], unit.name
        assert d["User"] == ["snapledger"] and d["Group"] == ["snapledger"], unit.name
        assert d["Restart"] == ["on-failure"] and d["StateDirectory"] == ["snapledger"], unit.name
        assert d["Environment"][0] == "SNAPLEDGER_CONFIG=/etc/snapledger/snapledger.yml", unit.name
        assert d["NoNewPrivileges"] == ["yes"] and d["ProtectSystem"] == ["strict"], unit.name
    split = [u for u in UNITS if u.name != "snapledger.service"]
    assert all(directives(u)["WantedBy"] == ["snapledger.target"] for u in split)
    ports = [directives(u).get("Environment", []) for u in split]
    metrics = [e for env in ports for e in env if e.startswith("SNAPLEDGER_METRICS_PORT=")]
    assert len(metrics) == len(set(metrics)) == 3  # worker, projector, scheduler: one port each


@needs_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    copies = installed_copies(tmp_path)
    result = subprocess.run([ANALYZE or "systemd-analyze", "verify", *map(str, copies)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_analyze
def test_units_are_hardened(tmp_path: Path) -> None:
    """`systemd-analyze security` rates each unit's exposure 0-10; 2.5 and
    below is what systemd calls OK (an unhardened service is 9.6)."""
    for copy in installed_copies(tmp_path):
        if copy.suffix != ".service":
            continue
        result = subprocess.run([ANALYZE or "systemd-analyze", "security", "--offline=yes", "--threshold=25",
                                 str(copy)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{copy.name}: {result.stdout[-600:]}{result.stderr}"


def test_example_production_config_loads() -> None:
    config = load_config(OPS / "config" / "snapledger.yml", environ={})
    assert config.database_url.startswith("postgresql://snapledger@")
    assert dict(parse_store_url(config.database_url).options) == {  # TLS to PostgreSQL, verified
        "sslmode": "verify-full", "sslrootcert": "/etc/snapledger/tls/db-ca.pem"}
    assert (config.tls_cert, config.tls_key) == ("/etc/snapledger/tls/server.pem", "/etc/snapledger/tls/server-key.pem")
    assert (config.host, config.port) == ("0.0.0.0", 25555) and config.data_dir == Path("/var/lib/snapledger")
    assert config.default_cpi_name() == "aws" and config.cpi_specs()["aws"].type == "external"
    assert [u["name"] for u in config.users] == ["ops", "prometheus"] and config.log_format == "json"


def test_the_readme_install_section_names_files_that_exist() -> None:
    """What the README's install commands copy from the checkout is there,
    and its glob installs every unit (the commands needing root and systemd
    are not run here; the wheel part is tests/e2e/test_wheel_install.py)."""
    import glob
    import re

    readme = (OPS.parent / "README.md").read_text()
    section = readme[readme.index("## Installing it on a server"):]
    block = section[section.index("```sh") + 5:section.index("```", section.index("```sh") + 5)]
    paths = set(re.findall(r"\bops/[\w./*-]+", block))
    assert {"ops/config/snapledger.yml", "ops/systemd/snapledger*.service", "ops/systemd/snapledger.target"} <= paths
    for pattern in paths:
        assert glob.glob(str(OPS.parent / pattern)), pattern
    assert sorted(Path(p).name for p in glob.glob(str(OPS.parent / "ops/systemd/snapledger*.service"))) == sorted(ROLES)
    assert "make wheel" in block and "wheel:" in (OPS.parent / "Makefile").read_text()
    for unit in ROLES:  # every unit the README starts is one we ship
        if unit != "snapledger.service":
            assert unit.removesuffix(".service") in block
