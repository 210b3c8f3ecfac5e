"""Shared fixtures: real PostgreSQL (one database per run, one schema per test), SQLite, runtimes.

PostgreSQL comes from SNAPLEDGER_TEST_DSN, else the local server on
127.0.0.1:5432, else a testcontainers PostgreSQL where Docker runs. Without
any, PostgreSQL tests skip, unless SNAPLEDGER_REQUIRE_POSTGRES=1 (CI), where
they fail.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUIRE_PG = os.environ.get("SNAPLEDGER_REQUIRE_POSTGRES") == "1"
_pg_tests_ran = 0


def _server_dsn() -> tuple[str | None, Any]:
    """A DSN of a server where we may create databases, and what to stop at the end."""
    candidates = [os.environ["SNAPLEDGER_TEST_DSN"]] if os.environ.get("SNAPLEDGER_TEST_DSN") else [LOCAL_DSN]
    # A loaded machine (or a server still starting) may refuse the first try:
    # give it a few before falling back, or one test process loses them all.
    for dsn in candidates:
        for attempt in range(5):
            try:
                psycopg.connect(dsn, connect_timeout=5).close()
                return dsn, None
            except psycopg.Error:
                time.sleep(1 + attempt)
    try:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:15", driver=None).start()
        return container.get_connection_url(), container
    except Exception:
        return None, None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str | None]:
    dsn, container = _server_dsn()
    yield dsn
    if container is not None:
        container.stop()


@pytest.fixture(scope="session")
def pg_database(pg_server: str | None) -> Iterator[str]:
    """A database of our own for this test run, dropped at the end."""
    if pg_server is None:
        if REQUIRE_PG:
            pytest.fail("PostgreSQL is required (SNAPLEDGER_REQUIRE_POSTGRES=1) but none is reachable")
        pytest.skip("no PostgreSQL reachable (set SNAPLEDGER_TEST_DSN)")
    name = f"snapledger_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(pg_server)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info["dbname"] = name
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    yield f"postgresql://{user}{password}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A fresh schema per test: tests never see each other's events."""
    global _pg_tests_ran
    _pg_tests_ran += 1
    return f"{pg_database}?schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test on both event stores."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("pg_url")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # CI checks this file to prove the PostgreSQL tests really ran.
    # Under pytest-xdist every worker process (and the controller, with 0)
    # appends its own count; .ci/run adds the lines up.
    report = os.environ.get("SNAPLEDGER_PG_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(f"{_pg_tests_ran}\n")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Longest first: `--dist loadfile` hands whole files to the two processes in
    # collection order (the Makefile turns off xdist's reordering by test count,
    # which put the single-test files, the slowest, last). Files marked `slow`
    # start at once, one per process, and the short ones fill in around them.
    # Files marked `pg_heavy` go last instead: the PostgreSQL chaos run's four
    # processes can hold most of the server's 100 connections, and beside the
    # suite's other PostgreSQL tests the server ran out (their servers could not
    # start: "too many clients"); at the end only the last short files run beside it.
    def order(item: pytest.Item) -> int:
        if item.get_closest_marker("pg_heavy") is not None:
            return 2
        return 0 if item.get_closest_marker("slow") is not None else 1

    items.sort(key=order)  # stable: the rest keep their order
