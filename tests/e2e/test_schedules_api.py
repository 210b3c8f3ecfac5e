"""Schedules over HTTP and the CLI: what an operator sets, sees and is refused."""

from __future__ import annotations

import calendar
import json
from datetime import datetime, timedelta, UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from support.process import Server, cli
from support.runtime import api_client, make_config


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@pytest.mark.parametrize("expression,token", [
    ("0 0 7 ? * * UTC", "?"),
    ("0 0 7 15W * * UTC", "15W"),
    ("0 0 25 * * * UTC", "25"),
    ("0 0 7 * * * Mars/Olympus", "Mars/Olympus"),
    ("every day", "every"),
])
async def test_bad_schedule_is_refused_naming_field_and_token(tmp_path: Path, sqlite_url: str,
                                                              expression: str, token: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        resp = await client.put("/config/snapshots", json={"snapshot_schedule": expression})
        assert resp.status == 400
        error = await resp.json()
        assert error["field"] == "snapshot_schedule", error
        assert token in error["error"], error
        # Nothing changed: the BOSH default is still in force.
        config = await (await client.get("/config/snapshots")).json()
        assert config["snapshot_schedule"] == "0 0 7 * * * UTC"


def _days_left(t: datetime) -> int:
    return calendar.monthrange(t.year, t.month)[1] - t.day


@pytest.mark.parametrize("expression, rule", [
    # fugit 1.13's readings, refused or read otherwise before issue 20
    ("0 0 -5 * * UTC", lambda t: _days_left(t) == 4),                  # 5 days before the end
    ("0 0 * * fri#-2 UTC", lambda t: t.isoweekday() == 5 and 7 <= _days_left(t) <= 13),
    ("0 0 13 * fri& UTC", lambda t: t.isoweekday() == 5 and t.day == 13),
    ("0 24 1 * 0-6 UTC", lambda t: True),                               # every day: OR, 24 = 0
])
async def test_fugit_schedules_are_accepted_and_listed(tmp_path: Path, sqlite_url: str,
                                                       expression: str, rule) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        resp = await client.put("/config/snapshots", json={"enable_snapshots": True,
                                                           "snapshot_schedule": expression})
        assert resp.status == 200, await resp.text()
        rows = {r["name"]: r for r in await (await client.get("/schedules")).json()}
        assert rows["snapshot_schedule"]["expression"] == expression
        fires = [_parse(t) for t in rows["snapshot_schedule"]["next_fires"]]
        assert len(fires) == 5 and fires == sorted(fires)
        assert all((f.hour, f.minute, f.second) == (0, 0, 0) and rule(f) for f in fires), fires
        if expression.startswith("0 24 1 * 0-6"):
            assert all(b - a == timedelta(days=1) for a, b in zip(fires, fires[1:])), fires

async def test_schedules_show_next_fires_in_the_schedules_zone(tmp_path: Path, store_url: str) -> None:
    async with api_client(make_config(tmp_path, store_url)) as client:
        # Disabled: the schedules are listed but inactive, with no next fires.
        rows = await (await client.get("/schedules")).json()
        assert {r["name"]: r["active"] for r in rows} == {"snapshot_schedule": False, "self_snapshot_schedule": False,
                                                          "retention_schedule": False}
        assert all(r["next_fires"] == [] and r["last_fire"] is None for r in rows)

        resp = await client.put("/config/snapshots", json={
            "enable_snapshots": True, "snapshot_schedule": "0 30 2 * * MON-FRI Europe/Berlin",
            "self_snapshot_schedule": "off"})
        assert resp.status == 200
        rows = {r["name"]: r for r in await (await client.get("/schedules")).json()}
        assert rows["self_snapshot_schedule"]["expression"] is None
        assert rows["self_snapshot_schedule"]["active"] is False
        fires = [_parse(t) for t in rows["snapshot_schedule"]["next_fires"]]
        assert len(fires) == 5 and fires == sorted(fires)
        assert fires[0] > datetime.now(UTC) - timedelta(seconds=1)
        berlin = [f.astimezone(ZoneInfo("Europe/Berlin")) for f in fires]
        # 02:30 Berlin wall-clock time on weekdays, whatever the UTC offset of the day.
        assert all((b.hour, b.minute, b.second) == (2, 30, 0) and b.weekday() < 5 for b in berlin)
        assert len({b.date() for b in berlin}) == 5


def test_cli_sets_and_shows_schedules(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        result = cli(server.url, "set-schedule", "snapshot_schedule", "0 0 7 * * * W")
        assert result.returncode == 1 and "'W'" in result.stderr, result.stderr
        assert cli(server.url, "enable-snapshots").returncode == 0
        result = cli(server.url, "set-schedule", "snapshot_schedule", "@daily")
        assert result.returncode == 0 and "snapshot_schedule: @daily" in result.stdout
        out = cli(server.url, "schedules").stdout
        assert "snapshot_schedule: @daily  [active]" in out
        assert "self_snapshot_schedule: 0 0 6 * * * UTC  [active]" in out
        rows = {r["name"]: r for r in json.loads(cli(server.url, "--json", "schedules").stdout)}
        nexts = rows["snapshot_schedule"]["next_fires"]
        assert all(f"  next   {t}" in out for t in nexts)
        assert len(nexts) == 5 and all(_parse(t).astimezone(UTC).strftime("%H:%M:%S") == "00:00:00" for t in nexts)
    finally:
        server.stop()
