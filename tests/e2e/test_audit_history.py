"""One snapshot's life over HTTP and the CLI, the instance-id filter, and the
listing `--at` a moment from the CLI."""

from __future__ import annotations

import json
from datetime import datetime, UTC
from pathlib import Path

from snapledger.domain.cpi import CpiError
from support.fakes import FakeCpi
from support.process import Server, cli
from support.runtime import api_client, make_config, wait_for, wait_task


async def test_history_pairs_every_cpi_call_with_its_answer(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    cpi = FakeCpi({"disk-a", "disk-b"})

    async with api_client(config, cpis={"local": cpi}) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        resp = await client.put("/deployments/prod", json={"instances": [
            {"job": "db", "index": 0, "id": "db-zero", "disks": ["disk-a"]},
            {"job": "db", "index": 1, "id": "db-one", "disks": ["disk-b"]}]})
        assert resp.status == 200, await resp.text()
        take = await wait_task(client, (await (await client.post("/deployments/prod/jobs/db/0/snapshots")).json())["task_id"])
        assert take["state"] == "done", take
        [row] = await (await client.get("/deployments/prod/snapshots")).json()
        cid = row["snapshot_cid"]

        # The first deletion fails in the IaaS, the second succeeds.
        cpi.failures[cid] = CpiError("Bosh::Clouds::CloudError", "snapshot is busy", ok_to_retry=False)
        failed = await wait_task(client, (await (await client.delete(f"/deployments/prod/snapshots/{cid}")).json())["task_id"])
        assert failed["state"] == "error", failed
        del cpi.failures[cid]
        deleted = await wait_task(client, (await (await client.delete(f"/deployments/prod/snapshots/{cid}")).json())["task_id"])
        assert deleted["state"] == "done", deleted

        async def life() -> dict | None:
            resp = await client.get(f"/snapshots/{cid}/history")
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            return body if body["state"] == "deleted" else None

        history = await wait_for(life)
        assert [e["type"] for e in history["events"]] == [
            "Snapshot.Requested", "Snapshot.CpiCallStarted", "Snapshot.Taken",
            "Snapshot.DeletionRequested", "Snapshot.CpiCallStarted", "Snapshot.DeletionFailed",
            "Snapshot.DeletionRequested", "Snapshot.CpiCallStarted", "Snapshot.Deleted"]
        assert history["deployment"] == "prod" and history["instance"] == "db/0"
        assert history["disk_cid"] == "disk-a" and history["trigger"] == "manual"
        assert history["requested_by"] == "admin" and history["task_id"] == take["id"]
        calls = history["cpi_calls"]
        assert [(c["method"], c["outcome"]) for c in calls] == [
            ("snapshot_disk", "Taken"), ("delete_snapshot", "DeletionFailed"), ("delete_snapshot", "Deleted")]
        assert calls[0]["answer"] == cid
        assert calls[1]["answer"]["type"] == "Bosh::Clouds::CloudError"
        assert calls[1]["task_id"] == failed["id"] and calls[2]["task_id"] == deleted["id"]
        assert all(isinstance(c["duration_s"], float) and c["finished_at"] >= c["started_at"] for c in calls)

        missing = await client.get("/snapshots/snap-unknown/history")
        assert missing.status == 404 and (await missing.json())["field"] == "cid"
        bad = await client.get("/snapshots/bad%20cid/history")
        assert bad.status == 400 and (await bad.json())["field"] == "cid"

        # The instance-id filter: every event of that instance's snapshot and nothing else.
        by_id = await (await client.get("/events", params={"instance_id": "db-zero"})).json()
        assert by_id and {e["instance"] for e in by_id} == {"db/0"}
        assert {e["snapshot_cid"] for e in by_id if e["type"].startswith("Snapshot.")} == {cid}
        assert await (await client.get("/events", params={"instance_id": "db-one"})).json() == []


def test_cli_history_and_listing_at_a_moment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    server = Server(data_dir).start()
    try:
        spec = tmp_path / "prod.yml"
        spec.write_text("name: prod\ninstances: [{job: db, index: 0, disks: [disk-a]}]\n")
        assert cli(server.url, "deploy", str(spec)).returncode == 0
        assert cli(server.url, "enable-snapshots").returncode == 0
        before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert cli(server.url, "take-snapshot", "-d", "prod").returncode == 0
        [row] = json.loads(cli(server.url, "--json", "snapshots", "-d", "prod").stdout)
        cid = row["snapshot_cid"]
        taken = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert cli(server.url, "delete-snapshot", "-d", "prod", cid, "-n").returncode == 0

        then = cli(server.url, "snapshots", "-d", "prod", "--at", taken)
        assert then.returncode == 0 and cid in then.stdout and then.stdout.splitlines()[-1] == "1 snapshots"
        assert cli(server.url, "snapshots", "-d", "prod", "--at", before).stdout.splitlines()[-1] == "0 snapshots"
        assert json.loads(cli(server.url, "--json", "snapshots", "-d", "prod").stdout) == []  # now: deleted
        bad = cli(server.url, "snapshots", "-d", "prod", "--at", "last tuesday")
        assert bad.returncode == 1 and "at" in bad.stderr

        out = cli(server.url, "history", cid)
        assert out.returncode == 0, out.stderr
        assert "now deleted" in out.stdout and "CPI calls" in out.stdout
        assert "snapshot_disk attempt 1" in out.stdout and "delete_snapshot attempt 1" in out.stdout
        life = json.loads(cli(server.url, "--json", "history", cid).stdout)
        assert [c["outcome"] for c in life["cpi_calls"]] == ["Taken", "Deleted"]
        missing = cli(server.url, "history", "snap-nope")
        assert missing.returncode == 1 and "no events for snapshot 'snap-nope'" in missing.stderr
    finally:
        server.stop()
