"""A deployment admin stays in their deployment (issue 16, item 4): a disk
belongs to one deployment at a time, moving it is an explicit, audited act of
someone allowed on both, and a refusal names the owner only to a caller who
may read it. Real HTTP, both event stores."""

from __future__ import annotations

from pathlib import Path

from support import runtime
from support.runtime import SECRETS, api_client, auth_as, make_config, make_disk, wait_for, wait_task

PROD_ADMIN = auth_as("prod-admin")  # snapledger.deployments.prod.admin only


def _config(tmp_path: Path, store_url: str):  # type: ignore[no-untyped-def]
    users = runtime.test_users()
    # prod's admin who may also read everything: may learn who owns a disk, still may not take it.
    users.append({"name": "prod-reader", "secret_hash": runtime._HASHES["prod-admin"],
                  "scopes": ["snapledger.deployments.prod.admin", "snapledger.read"]})
    config = make_config(tmp_path, store_url, users=users)
    for disk in ("a-0", "b-0"):
        make_disk(config, disk)
    return config


def _as(name: str, secret_of: str) -> dict[str, str]:
    from aiohttp import encode_basic_auth

    return {"Authorization": encode_basic_auth(name, SECRETS[secret_of])}


OTHER = {"instances": [{"job": "bjob", "index": 0, "disks": ["b-0"]}]}
PROD_WITH_B = {"instances": [{"job": "db", "index": 0, "disks": ["a-0", "b-0"]}]}


async def test_a_deployment_admin_cannot_take_another_deployments_disk(tmp_path: Path, store_url: str) -> None:
    async with api_client(_config(tmp_path, store_url)) as client:
        assert (await client.put("/config/snapshots", json={"enable_snapshots": True})).status == 200
        assert (await client.put("/deployments/dep-b", json=OTHER)).status == 200
        resp = await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0,
                                                                         "disks": ["a-0"]}]}, headers=PROD_ADMIN)
        assert resp.status == 200

        resp = await client.put("/deployments/prod", json=PROD_WITH_B, headers=PROD_ADMIN)
        refusal = await resp.json()
        assert resp.status == 409 and refusal["field"] == "instances", refusal
        assert "b-0" in refusal["error"] and "dep-b" not in refusal["error"] and refusal["owners"] == {}, refusal
        # Moving needs the right on both: asking for it does not help.
        resp = await client.put("/deployments/prod", json={**PROD_WITH_B, "move_disks": ["b-0"]},
                                headers=PROD_ADMIN)
        assert resp.status == 409

        # A caller who may read dep-b learns the owner, and still may not take the disk.
        reader = _as("prod-reader", "prod-admin")
        resp = await client.put("/deployments/prod", json={**PROD_WITH_B, "move_disks": ["b-0"]}, headers=reader)
        refusal = await resp.json()
        assert resp.status == 409 and refusal["owners"] == {"b-0": "dep-b"}, refusal
        assert "deployment 'dep-b'" in refusal["error"] and "move_disks" in refusal["error"]

        # Nothing changed: prod still only has its disk, so a snapshot of prod never reads b-0.
        prod = await (await client.get("/deployments/prod")).json()
        assert [i["disks"] for i in prod["instances"]] == [["a-0"]]
        resp = await client.post("/deployments/prod/snapshots", headers=PROD_ADMIN)
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        listed = await (await client.get("/deployments/prod/snapshots", headers=PROD_ADMIN)).json()
        assert {s["disk_cid"] for s in listed} == {"a-0"}

        # dep-b's snapshots are not prod's to restore.
        resp = await client.post("/deployments/dep-b/snapshots")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        other_cid = (await (await client.get("/deployments/dep-b/snapshots")).json())[0]["snapshot_cid"]
        resp = await client.post(f"/deployments/prod/snapshots/{other_cid}/restore",
                                 json={"to_new_disk": "stolen-0"}, headers=PROD_ADMIN)
        assert resp.status == 404, await resp.text()


async def test_moving_a_disk_is_explicit_and_audited(tmp_path: Path, store_url: str) -> None:
    async with api_client(_config(tmp_path, store_url)) as client:
        assert (await client.put("/deployments/dep-b", json=OTHER)).status == 200
        resp = await client.put("/deployments/prod", json=PROD_WITH_B)  # even the admin must say "move"
        assert resp.status == 409 and (await resp.json())["owners"] == {"b-0": "dep-b"}

        resp = await client.put("/deployments/prod", json={**PROD_WITH_B, "move_disks": ["b-0"]})
        assert resp.status == 200, await resp.text()
        other = await (await client.get("/deployments/dep-b")).json()
        assert [i["disks"] for i in other["instances"]] == [[]]  # it left dep-b's inventory

        async def moves() -> list:
            return await (await client.get("/events", params={"type": "Ownership.Moved"})).json()

        moved = await wait_for(moves)  # the audit view follows the log
        assert [(e["actor"], e["data"]["from_deployment"], e["data"]["deployment"], e["data"]["disks"],
                 e["data"]["jobs"]) for e in moved] == [("admin", "dep-b", "prod", ["b-0"], [])], moved

        # Now dep-b may not list it back without a move of its own.
        resp = await client.put("/deployments/dep-b", json=OTHER)
        assert resp.status == 409 and (await resp.json())["owners"] == {"b-0": "prod"}


async def test_a_deleted_or_released_disk_is_free_again(tmp_path: Path, store_url: str) -> None:
    async with api_client(_config(tmp_path, store_url)) as client:
        assert (await client.put("/deployments/dep-b", json=OTHER)).status == 200
        assert (await client.put("/deployments/dep-b", json={"instances": []})).status == 200  # released
        resp = await client.put("/deployments/prod", json=PROD_WITH_B, headers=PROD_ADMIN)
        assert resp.status == 200, await resp.text()
        assert (await client.delete("/deployments/prod")).status == 200  # deleted: its disks are free
        assert (await client.put("/deployments/dep-b", json=OTHER)).status == 200


async def test_an_inventory_that_lists_a_disk_twice_is_a_conflict(tmp_path: Path, store_url: str) -> None:
    async with api_client(_config(tmp_path, store_url)) as client:
        twice = {"instances": [{"job": "db", "index": 0, "disks": ["a-0"]}, {"job": "web", "index": 0,
                                                                          "disks": ["a-0"]}]}
        resp = await client.put("/deployments/prod", json=twice)
        body = await resp.json()
        assert resp.status == 409 and body["code"] == "inventory_conflict" and body["field"] == "instances", body
        assert (await client.get("/deployments/prod")).status == 404


async def test_a_job_update_never_runs_another_deployments_release_job(tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url)
    config.jobs_dir = tmp_path / "jobs"
    config.drain_wait_scale = 0.01
    marks = tmp_path / "ran"
    drain = config.jobs_dir / "bjob" / "bin" / "drain"
    drain.parent.mkdir(parents=True)
    drain.write_text(f"#!/bin/sh\necho \"$0\" >> {marks}\necho 0\n")
    drain.chmod(0o755)
    async with api_client(config) as client:
        assert (await client.put("/config/snapshots", json={"enable_snapshots": True})).status == 200
        assert (await client.put("/deployments/dep-b", json=OTHER)).status == 200  # dep-b runs bjob
        # prod may name the job (deployments share job names), but its scripts are dep-b's.
        prod = {"instances": [{"job": "db", "index": 0, "disks": ["a-0"], "jobs": ["bjob"]}]}
        assert (await client.put("/deployments/prod", json=prod, headers=PROD_ADMIN)).status == 200
        resp = await client.post("/deployments/prod/jobs/db/updates", json={}, headers=PROD_ADMIN)
        refusal = await resp.json()
        assert resp.status == 409 and refusal["code"] == "job_owned_by_another_deployment", refusal
        assert refusal["field"] == "jobs" and "dep-b" not in refusal["error"] and refusal["owners"] == {}
        resp = await client.put("/deployments/prod", json={**prod, "move_jobs": ["bjob"]}, headers=PROD_ADMIN)
        assert resp.status == 409 and (await resp.json())["field"] == "move_jobs"
        # Nor does an in-place restore of prod's disk (it drains and stops the instance's jobs).
        resp = await client.post("/deployments/prod/snapshots", headers=PROD_ADMIN)
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        cid = (await (await client.get("/deployments/prod/snapshots", headers=PROD_ADMIN)).json())[0]["snapshot_cid"]
        resp = await client.post(f"/deployments/prod/snapshots/{cid}/restore", headers=PROD_ADMIN)
        assert resp.status == 409 and (await resp.json())["code"] == "job_owned_by_another_deployment"
        assert not marks.exists()  # bjob's drain never ran for prod

        # dep-b's own update runs it; an admin of both may hand the job over, and then it is prod's.
        resp = await client.post("/deployments/dep-b/jobs/bjob/updates", json={})
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        assert marks.read_text().count("drain") == 1
        resp = await client.put("/deployments/prod", json={**prod, "move_jobs": ["bjob"]})
        assert resp.status == 200, await resp.text()
        resp = await client.post("/deployments/dep-b/jobs/bjob/updates", json={})
        assert resp.status == 409 and (await resp.json())["owners"] == {"bjob": "prod"}
        resp = await client.post("/deployments/prod/jobs/db/updates", json={}, headers=PROD_ADMIN)
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        assert marks.read_text().count("drain") == 2
