"""Who wins: a setting the configuration file declares is managed by the file.

A runtime change of it is refused (409 naming the file and the key), the API
and the CLI say which values come from the file, a restart re-applies nothing
that did not change, and a schedule the file changes never fires for instants
before the change (decision 24)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any

import pytest

from snapledger.adapters.config import Config, load_config
from support.process import Server, cli
from support.runtime import api_client, test_users as _users

UTC = UTC


def _config(tmp_path: Path, database: str, text: str) -> Config:
    path = tmp_path / "snapledger.yml"
    path.write_text(text)
    config = load_config(path, environ={}, data_dir=tmp_path / "data", database=database)
    config.users, config.poll_interval_s, config.log_level = _users(), 0.05, "warning"
    return config


DECLARED = """\
enable_snapshots: true
snapshot_schedule: '0 0 3 * * * UTC'
retention:
  default: {keep_for: 30d}
  deployments:
    prod: {keep_last: 7}
"""


async def test_a_runtime_change_of_a_managed_key_is_refused_naming_file_and_key(tmp_path: Path,
                                                                                 store_url: str) -> None:
    config = _config(tmp_path, store_url, DECLARED)
    path = str(tmp_path / "snapledger.yml")
    async with api_client(config) as client:
        resp = await client.put("/config/snapshots", json={"snapshot_schedule": "off"})
        assert resp.status == 409
        error = await resp.json()
        assert error["code"] == "managed_by_config" and error["field"] == "snapshot_schedule"
        assert path in error["error"] and "'snapshot_schedule'" in error["error"]

        # All or nothing: an unmanaged change in the same request is not applied either.
        resp = await client.put("/config/snapshots", json={"self_snapshot_schedule": "off",
                                                           "enable_snapshots": False})
        assert resp.status == 409 and (await resp.json())["field"] == "enable_snapshots"
        shown = await (await client.get("/config/snapshots")).json()
        assert shown["enable_snapshots"] is True and shown["self_snapshot_schedule"] == "0 0 6 * * * UTC"
        assert shown["managed_by"] == {"enable_snapshots": path, "snapshot_schedule": path}

        # Setting a managed key to the value it has is no change; unmanaged keys stay settable.
        resp = await client.put("/config/snapshots", json={"enable_snapshots": True,
                                                           "self_snapshot_schedule": "off"})
        assert resp.status == 200 and (await resp.json())["self_snapshot_schedule"] is None

        rows = {r["name"]: r for r in await (await client.get("/schedules")).json()}
        assert rows["snapshot_schedule"]["managed_by"] == path
        assert rows["self_snapshot_schedule"]["managed_by"] is None

        # The refusal is in the audit log, with who tried.
        refusals = await (await client.get("/events", params={"type": "Refusal"})).json()
        assert [r["data"]["details"] for r in refusals] == [
            {"key": "snapshot_schedule", "managed_by": path}, {"key": "enable_snapshots", "managed_by": path}]
        assert {r["actor"] for r in refusals} == {"admin"}


async def test_declared_retention_policies_are_managed_by_the_file(tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url, DECLARED)
    path = str(tmp_path / "snapledger.yml")
    async with api_client(config) as client:
        default = await (await client.get("/config/retention")).json()
        assert (default["keep_for"], default["managed_by"]) == ("30d", path)
        resp = await client.put("/config/retention", json={"keep_last": 2})
        assert resp.status == 409
        assert (await resp.json())["field"] == "retention.default"

        # A deployment recorded after start gets its declared policy with its first inventory.
        for name in ("prod", "dev"):
            resp = await client.put(f"/deployments/{name}", json={"instances": [
                {"job": "db", "index": 0, "disks": [f"disk-{name}"]}]})
            assert resp.status == 200
        prod = await (await client.get("/deployments/prod/retention")).json()
        assert (prod["keep_last"], prod["source"], prod["managed_by"]) == (7, "deployment", path)
        resp = await client.put("/deployments/prod/retention", json={"inherit": True})
        assert resp.status == 409
        error = await resp.json()
        assert error["field"] == "retention.deployments.prod" and path in error["error"]

        # dev is not declared: its own policy is a runtime choice.
        dev = await (await client.get("/deployments/dev/retention")).json()
        assert (dev["source"], dev["managed_by"]) == ("default", path)  # the default it inherits is the file's
        resp = await client.put("/deployments/dev/retention", json={"keep_last": 3})
        assert resp.status == 200
        dev = await resp.json()
        assert (dev["keep_last"], dev["source"], dev["managed_by"]) == (3, "deployment", None)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _scheduled_tasks(server: Server) -> list[dict[str, Any]]:
    return [t for t in server.api("GET", "/tasks") if t["trigger"] == "scheduled"]


def _settings_events(server: Server) -> list[dict[str, Any]]:
    return [e for e in server.api("GET", "/events?type=Settings") if e["type"] != "Settings.Created"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_restarts_keep_the_file_in_charge_and_never_catch_up_before_a_change(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    database = request.getfixturevalue("pg_url") if backend == "postgres" else None
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-0").mkdir(parents=True)
    config = _write(tmp_path / "snapledger.yml", "enable_snapshots: true\nsnapshot_schedule: '0 0 7 * * * UTC'\n"
                                                 "self_snapshot_schedule: 'off'\n"
                                                 "retention: {default: {keep_last: 5}}\n")
    server = Server(data_dir, database, config=config).start()
    try:
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        # The operator's `set-schedule ... off` is refused: it would be undone at the next start.
        result = cli(server.url, "set-schedule", "snapshot_schedule", "off")
        assert result.returncode == 1
        assert f"'snapshot_schedule' is managed by the configuration ({config})" in result.stderr, result.stderr
        shown = cli(server.url, "schedules").stdout
        assert f"snapshot_schedule: 0 0 7 * * * UTC  [active, managed by {config}]" in shown, shown
        shown = cli(server.url, "retention", "--default")
        assert shown.stdout.strip() == f"keep the last 5 (default policy, managed by {config})", shown.stderr
        result = cli(server.url, "retention", "--default", "--keep-last", "9")
        assert result.returncode == 1 and "'retention.default' is managed by the configuration" in result.stderr
        declared = _settings_events(server)

        # A restart with the same file records nothing again.
        server.stop()
        server = Server(data_dir, database, port=server.port, config=config).start()
        assert _settings_events(server) == declared

        # The file changes the schedule to one whose latest fire has just passed:
        # it fires from the change on, never for that instant before it.
        server.stop()
        passed = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        _write(config, "enable_snapshots: true\nself_snapshot_schedule: 'off'\nretention: {default: {keep_last: 5}}\n"
                       f"snapshot_schedule: '{passed.second} {passed.minute} {passed.hour} * * * UTC'\n")
        server = Server(data_dir, database, port=server.port, config=config).start()
        changes = _settings_events(server)[len(declared):]
        assert [(e["type"], e["actor"]) for e in changes] == [("Settings.ScheduleSet", "config")]
        time.sleep(1.5)  # several scheduler ticks
        rows = {r["name"]: r for r in json.loads(cli(server.url, "--json", "schedules").stdout)}
        assert rows["snapshot_schedule"]["last_fire"] is None
        assert rows["snapshot_schedule"]["next_fires"][0] > passed.isoformat()  # tomorrow
        assert _scheduled_tasks(server) == []
    finally:
        server.kill()
