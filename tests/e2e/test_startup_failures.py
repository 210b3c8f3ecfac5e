"""Start-up failures: one line on stderr and a non-zero exit, never a traceback.

Each case runs the real `snapledger` executable; exit 2 means "fix the
configuration", exit 1 "this machine refused the start" (api/startup.py)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from collections.abc import Iterator

import pytest

from support.process import SNAPLEDGER, free_port


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          command: str = "serve") -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SNAPLEDGER_CONFIG"}
    return subprocess.run([SNAPLEDGER, command, *args], capture_output=True, text=True, timeout=60,
                          env={**environ, **(env or {})}, cwd=tmp_path)


def refused(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line the process printed before it exited with `code`."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0][len("Error: "):]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_config_that_does_not_parse(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("listen: {port: 80\n")
    line = refused(start(tmp_path, "--config", "c.yml"), 2)
    assert line.startswith("c.yml: not valid YAML (line 2, column 1)")


def test_a_typo_in_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("enable_snapshot: true\n")
    line = refused(start(tmp_path, "--config", "c.yml"), 2)
    assert line == "c.yml: unknown key 'enable_snapshot' (did you mean 'enable_snapshots'?)"


def test_a_typo_in_a_variable(tmp_path: Path) -> None:
    line = refused(start(tmp_path, env={"SNAPLEDGER_SNAPSHOT_SCHEDULES": "@daily"}), 2)
    assert line == ("environment: unknown variable 'SNAPLEDGER_SNAPSHOT_SCHEDULES' "
                    "(did you mean 'SNAPLEDGER_SNAPSHOT_SCHEDULE'?)")


def test_a_wrong_type(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("worker: {max_in_flight: many}\n")
    line = refused(start(tmp_path, "--config", "c.yml"), 2)
    assert line == "c.yml: config key 'worker.max_in_flight': expected an integer, got 'many'"


def test_the_port_is_in_use(tmp_path: Path, taken_port: int) -> None:
    line = refused(start(tmp_path, "--data-dir", "data", "--port", str(taken_port)), 1)
    assert line == f"cannot listen on 127.0.0.1:{taken_port} for the API: Address already in use"
    assert not (tmp_path / "data" / "ledger.sqlite").exists()  # refused before anything started


def test_the_metrics_port_of_a_worker_is_in_use(tmp_path: Path, taken_port: int) -> None:
    line = refused(start(tmp_path, "--data-dir", "data", env={"SNAPLEDGER_METRICS_PORT": str(taken_port)},
                         command="worker"), 1)
    assert line.startswith(f"cannot listen on 0.0.0.0:{taken_port} for metrics: ")


def test_the_data_directory_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    line = refused(start(tmp_path, "--data-dir", "file/data"), 1)
    assert line == "data directory file/data is not writable: Not a directory"


def test_the_data_directory_is_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/sys/fs/snapledger-data")  # sysfs refuses new directories, even to root
        try:
            target.mkdir()
        except OSError:
            pass
        else:
            target.rmdir()
            pytest.skip("no directory here is read-only for root")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "data"
    line = refused(start(tmp_path, "--data-dir", str(target)), 1)
    assert line.startswith(f"data directory {target} is not writable: ")


def test_postgresql_is_unreachable_at_start(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = start(tmp_path, "--data-dir", "data", "--port", str(free_port()),
                   "--database", f"postgresql://postgres@127.0.0.1:{port}/snapledger?schema=s")
    line = refused(result, 1)
    assert line.startswith(f"the database is unreachable at start (postgresql://postgres@127.0.0.1:{port}/"
                           "snapledger?schema=s): ")
    assert "Connection refused" in line


def test_tls_files_that_are_not_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    line = refused(start(tmp_path, "--data-dir", "data", "--tls-cert", "cert.pem", "--tls-key", "cert.pem"), 2)
    assert line == ("TLS: cannot load certificate cert.pem with key cert.pem: "
                    "not a PEM certificate with its matching private key")


def test_tls_files_that_do_not_exist(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text("tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}\n")
    line = refused(start(tmp_path, "--data-dir", "data", "--config", "c.yml"), 2)
    assert line == ("TLS: cannot load certificate /nonexistent/cert.pem with key /nonexistent/key.pem: "
                    "No such file or directory")


def test_a_cpi_directory_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "c.yml").write_text("cpi: {type: local, disk_root: file/disks}\n")
    line = refused(start(tmp_path, "--data-dir", "data", "--config", "c.yml", "--port", str(free_port())), 1)
    assert line == "cannot start: file/disks: Not a directory"
