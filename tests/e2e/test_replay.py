"""`snapledger replay`: views verified against, and rebuilt from, the log alone."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import psycopg

from support.process import SNAPLEDGER, Server


def replay(data_dir: Path, database: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    command = [SNAPLEDGER, "replay", "--data-dir", str(data_dir), *args]
    if database:
        command += ["--database", database]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SNAPLEDGER_LOG_LEVEL": "warning"})


def tamper(data_dir: Path, database: str | None, statement: str) -> None:
    if database is None:
        with sqlite3.connect(data_dir / "ledger.sqlite") as conn:
            conn.execute(statement)
        return
    base, schema = database.split("?schema=")
    with psycopg.connect(base, autocommit=True, options=f"-c search_path={schema}") as conn:
        conn.execute(statement)


def test_verify_finds_tampering_and_rebuild_repairs_it(tmp_path: Path, store_url: str) -> None:
    database = None if store_url.startswith("sqlite") else store_url
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    server = Server(data_dir, database).start()
    try:
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})
        for _ in range(3):
            server.wait_task(server.api("POST", "/deployments/prod/snapshots")["task_id"])
        listing = server.api("GET", "/deployments/prod/snapshots")

        ok = replay(data_dir, database, "--verify")
        assert ok.returncode == 0 and "views equal a rebuild" in ok.stdout, ok.stdout + ok.stderr
        assert "replayed to position" in ok.stderr  # progress

        tamper(data_dir, database, "UPDATE snapshots_view SET trigger = 'forged' WHERE snapshot_cid = "
                                   f"'{listing[0]['snapshot_cid']}'")
        bad = replay(data_dir, database, "--verify")
        assert bad.returncode == 1 and "DIFFERS snapshots.snapshots_view" in bad.stdout, bad.stdout + bad.stderr

        fixed = replay(data_dir, database, "--rebuild", "snapshots")  # the service keeps running
        assert fixed.returncode == 0 and "swapped in" in fixed.stdout, fixed.stdout + fixed.stderr
        assert server.api("GET", "/deployments/prod/snapshots") == listing
        assert replay(data_dir, database, "--verify").returncode == 0
        # ...and keeps projecting after the swap.
        server.wait_task(server.api("POST", "/deployments/prod/snapshots")["task_id"])
        assert len(server.api("GET", "/deployments/prod/snapshots")) == 4
        assert replay(data_dir, database, "--rebuild", "nope").returncode == 2
    finally:
        server.stop()


def test_replay_refuses_a_store_that_does_not_exist(tmp_path: Path, pg_url: str) -> None:
    # It used to create an empty ./.snapledger/ledger.sqlite and report "all views equal".
    for args in (["--verify"], ["--rebuild", "snapshots"]):
        result = subprocess.run([SNAPLEDGER, "replay", *args], capture_output=True, text=True, timeout=60,
                                cwd=tmp_path, env={**os.environ, "SNAPLEDGER_LOG_LEVEL": "warning"})
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"no event store at sqlite:///{str(tmp_path.resolve()).lstrip('/')}/.snapledger/ledger.sqlite" \
            in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / ".snapledger").exists()  # nothing created
    result = replay(tmp_path / "data", pg_url, "--verify")
    assert result.returncode == 1 and f"no event store at {pg_url.split('://')[0]}://postgres@" in result.stderr
    schema = pg_url.split("?schema=")[1]
    with psycopg.connect(pg_url.split("?")[0]) as conn:  # and no schema left behind
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0] == 0
