"""A PostgreSQL cluster the test owns, so it can be stopped and restarted
without disturbing anything else on the machine (other test runs use the
shared server); ops/chaos.py as a module for the chaos runs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType
from collections.abc import Iterator

import pytest

from support.process import free_port

CHAOS = Path(__file__).resolve().parents[2] / "ops" / "chaos.py"
PG_BIN = Path(os.environ.get("SNAPLEDGER_PG_BIN", "/usr/lib/postgresql/15/bin"))


class OwnedPostgres:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"

    def _run(self, *args: str) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def init(self) -> OwnedPostgres:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def owned_pg() -> Iterator[OwnedPostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN} (set SNAPLEDGER_PG_BIN)")
    root = Path(tempfile.mkdtemp(prefix="snapledger-pg-"))
    os.chmod(root, 0o777)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = OwnedPostgres(root, free_port()).init()
    pg.start()
    try:
        yield pg
    finally:
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def chaos() -> ModuleType:
    """ops/chaos.py (a script, not part of the package) as a module."""
    spec = importlib.util.spec_from_file_location("snapledger_chaos", CHAOS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
