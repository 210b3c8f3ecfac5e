"""Bad input gets a clear JSON error naming the field, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.runtime import api_client, make_config


@pytest.mark.parametrize("body,field,status,code", [
    ({"instances": [{"job": "db", "index": "zero", "disks": []}]}, "instances", 400, "invalid"),
    ({"instances": [{"job": "../etc", "index": 0, "disks": []}]}, "instances", 400, "invalid"),
    ({"instances": [{"job": "db", "index": 0, "disks": ["../../etc"]}]}, "instances", 400, "invalid"),
    # Well-formed items that contradict each other: 409 (decision 27), still naming the field.
    ({"instances": [{"job": "db", "index": 0, "disks": ["d"]}, {"job": "db", "index": 0, "disks": []}]},
     "instances", 409, "inventory_conflict"),
    ({"instances": [{"job": "db", "index": 0, "disks": ["d"]}, {"job": "web", "index": 0, "disks": ["d"]}]},
     "instances", 409, "inventory_conflict"),
    ({"instances": [], "colour": "blue"}, "colour", 400, "invalid"),
    ({"tags": {"a": 1}, "instances": []}, "tags", 400, "invalid"),
    ({}, "instances", 400, "invalid"),
])
async def test_invalid_deployment_bodies(tmp_path: Path, sqlite_url: str, body: dict, field: str,
                                         status: int, code: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        resp = await client.put("/deployments/prod", json=body)
        assert resp.status == status
        error = await resp.json()
        assert error["code"] == code and error["field"] == field, error
        assert (await client.get("/deployments/prod")).status == 404  # nothing recorded


async def test_malformed_requests(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        resp = await client.put("/config/snapshots", data=b"{not json", headers={"Content-Type": "application/json"})
        assert resp.status == 400 and (await resp.json())["field"] == "body"
        resp = await client.put("/config/snapshots", json={"enable_snapshots": "yes"})
        assert resp.status == 400 and (await resp.json())["field"] == "enable_snapshots"
        resp = await client.put("/config/snapshots", json=[True])
        assert resp.status == 400
        resp = await client.put("/deployments/bad%20name", json={"instances": []})
        assert resp.status == 400 and (await resp.json())["field"] == "name"
        resp = await client.put("/deployments/self", json={"instances": []})
        assert resp.status == 400 and "reserved" in (await resp.json())["error"]
        resp = await client.put("/deployments/big", data=b"x" * (2 * 1024 * 1024),
                                headers={"Content-Type": "application/json"})
        assert resp.status == 413
        resp = await client.get("/deployments/prod/snapshots", params={"limit": "0"})
        assert resp.status == 400 and (await resp.json())["field"] == "limit"
        resp = await client.get("/tasks", params={"state": "exploded"})
        assert resp.status == 400 and (await resp.json())["field"] == "state"


async def test_unknown_things_are_404_json(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url, enable_snapshots=True)) as client:
        await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": []}]})
        for method, path, code in [
            ("GET", "/deployments/nope", "deployment_not_found"),
            ("GET", "/deployments/nope/snapshots", "deployment_not_found"),
            ("POST", "/deployments/nope/snapshots", "deployment_not_found"),
            ("POST", "/deployments/prod/jobs/db/3/snapshots", "instance_not_found"),
            ("POST", "/deployments/prod/jobs/web/0/snapshots", "instance_not_found"),
            ("DELETE", "/deployments/prod/snapshots/snap-nope", "snapshot_not_found"),
            ("GET", "/tasks/00000000-0000-0000-0000-000000000000", "task_not_found"),
            ("GET", "/tasks/not-a-uuid", "task_not_found"),
            ("GET", "/tasks/00000000-0000-0000-0000-000000000000/events", "task_not_found"),
            ("GET", "/no/such/route", "not_found"),
        ]:
            resp = await client.request(method, path)
            assert resp.status == 404, (method, path, resp.status)
            assert (await resp.json())["code"] == code, (method, path)
        resp = await client.request("PATCH", "/deployments/prod")
        assert resp.status == 405 and "error" in await resp.json()
