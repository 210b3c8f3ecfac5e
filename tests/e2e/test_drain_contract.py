"""The BOSH drain contract as a real drain script sees it, through a real
`snapledger serve` on PostgreSQL and the CLI: the exact argv and
BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE of an update without and with a size
change, a shutdown, an in-place restore, a dynamic drain's job_check_status
call, and an instance whose size is unknown. Then the audit of those drains
over HTTP: every event of a job update and a restore is found by deployment,
job/index and disk, and a clean snapshot's history links to its drain."""

from __future__ import annotations

import json
import urllib.parse
import uuid
from typing import Any
from collections.abc import Iterator

import pytest

from support.process import Server, cli

UNSET = "<unset>"
# Records each call (argv, the two variables) as one JSON line; answers -1
# (ask again) to the first call of a drain when the `dynamic` flag file exists.
DRAIN = """#!/bin/bash
log={log}
printf '{{"argv": "%s", "state": "%s", "next": "%s"}}\\n' "$*" \\
  "$(echo "${{BOSH_JOB_STATE-{unset}}}" | sed 's/"/\\\\"/g')" \\
  "$(echo "${{BOSH_JOB_NEXT_STATE-{unset}}}" | sed 's/"/\\\\"/g')" >> "$log"
if [ -e {flag} ] && [ "$1" != job_check_status ]; then echo -1; else echo 0; fi
"""

DEPLOYMENT = """name: prod
instances:
  - {job: db, index: 0, disks: [disk-db-0], agent_id: agent-db-0, persistent_disk: 1024}
  - {job: db, index: 1, disks: [disk-db-1]}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pg_database: str) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("drain")
    data_dir = root / ".snapledger"
    for cid in ("disk-db-0", "disk-db-1"):
        (data_dir / "disks" / cid).mkdir(parents=True)
        (data_dir / "disks" / cid / "data.txt").write_text(cid)
    drain = data_dir / "jobs" / "db" / "bin" / "drain"
    drain.parent.mkdir(parents=True)
    drain.write_text(DRAIN.format(log=root / "drain.log", flag=root / "dynamic", unset=UNSET))
    drain.chmod(0o755)
    server = Server(data_dir, database=f"{pg_database}?schema=t_{uuid.uuid4().hex[:12]}").start()
    (root / "prod.yml").write_text(DEPLOYMENT)
    result = cli(server.url, "deploy", str(root / "prod.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert cli(server.url, "enable-snapshots").returncode == 0
    yield server
    server.stop()


def drain_calls(server: Server, *args: str) -> tuple[list[tuple[str, Any, Any]], str]:
    """Run a CLI command; the drain calls it caused (argv, STATE, NEXT_STATE) and its output."""
    log = server.data_dir.parent / "drain.log"
    log.unlink(missing_ok=True)
    result = cli(server.url, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = []
    for line in log.read_text().splitlines():
        call = json.loads(line)
        calls.append((call["argv"], *(v if v == UNSET else json.loads(v) for v in (call["state"], call["next"]))))
    return calls, result.stdout


def events(server: Server, **filters: Any) -> list[dict[str, Any]]:
    return server.api("GET", "/events?" + urllib.parse.urlencode({**filters, "limit": 5000}))


def test_what_a_drain_script_gets(server: Server) -> None:
    size = {"persistent_disk": 1024}
    # An update that does not change the disk: the recorded size, twice (never 0: 0 means "disk removed").
    calls, out = drain_calls(server, "update-job", "-d", "prod", "db", "0")
    assert calls == [("job_changed hash_changed", size, size)]
    # `task N` shows each call's argv and environment.
    assert 'db: drain job_changed hash_changed BOSH_JOB_STATE={"persistent_disk": 1024} ' \
           'BOSH_JOB_NEXT_STATE={"persistent_disk": 1024} -> 0' in out, out

    calls, out = drain_calls(server, "update-job", "-d", "prod", "db", "0", "--persistent-disk", "2048")
    assert calls == [("job_changed hash_changed", size, {"persistent_disk": 2048})]
    assert 'BOSH_JOB_NEXT_STATE={"persistent_disk": 2048}' in out

    calls, _ = drain_calls(server, "update-job", "-d", "prod", "db", "0", "--drain-type", "shutdown")
    assert calls == [("job_shutdown hash_unchanged", size, size)]

    # The announcement says the disk goes away: then, and only then, 0.
    calls, _ = drain_calls(server, "update-job", "-d", "prod", "db", "0", "--drain-type", "shutdown",
                           "--persistent-disk", "0")
    assert calls == [("job_shutdown hash_unchanged", size, {"persistent_disk": 0})]

    # The inventory does not know db/1's size: `{}` (no persistent_disk key), never a made-up 0.
    calls, _ = drain_calls(server, "update-job", "-d", "prod", "db", "1")
    assert calls == [("job_changed hash_changed", {}, {})]

    # Dynamic drain: the re-invocation gets job_check_status without BOSH_JOB_NEXT_STATE, as in BOSH.
    flag = server.data_dir.parent / "dynamic"
    flag.touch()
    try:
        calls, out = drain_calls(server, "update-job", "-d", "prod", "db", "0")
    finally:
        flag.unlink()
    assert calls == [("job_changed hash_changed", size, size), ("job_check_status hash_unchanged", size, UNSET)]
    assert 'drain job_check_status hash_unchanged BOSH_JOB_STATE={"persistent_disk": 1024} ' \
           'BOSH_JOB_NEXT_STATE unset -> 0' in out, out

    # An in-place restore: job_shutdown, the disk stays (its recorded size, twice).
    listing = server.api("GET", "/deployments/prod/snapshots")
    cid = next(r["snapshot_cid"] for r in listing if r["disk_cid"] == "disk-db-0")
    calls, out = drain_calls(server, "restore", "-d", "prod", cid, "-n")
    assert calls == [("job_shutdown hash_unchanged", size, size)]
    assert "db: drain job_shutdown hash_unchanged" in out, out


def test_snapshot_metadata_carries_the_agent_id(server: Server) -> None:
    assert cli(server.url, "take-snapshot", "-d", "prod").returncode == 0
    requested = {e["data"]["instance_id"]: e["data"]["metadata"]
                 for e in events(server, deployment="prod", type="Snapshot.Requested")}
    dep = server.api("GET", "/deployments/prod")
    by_index = {i["index"]: i for i in dep["instances"]}
    assert by_index[0]["agent_id"] == "agent-db-0" and by_index[0]["persistent_disk"] == 1024
    assert "agent_id" not in by_index[1] and "persistent_disk" not in by_index[1]
    assert requested[by_index[0]["id"]]["agent_id"] == "agent-db-0"
    assert requested[by_index[1]["id"]]["agent_id"] is None  # as BOSH sends it for an instance without a VM


def test_the_audit_finds_every_event_of_a_job_update_and_a_restore(server: Server) -> None:
    accepted = server.api("POST", "/deployments/prod/jobs/db/0/updates", {})
    update = accepted["task_id"]
    assert server.wait_task(update)["state"] == "done"
    task_events = server.api("GET", f"/tasks/{update}/events")
    by_deployment = [e for e in events(server, deployment="prod") if e["task_id"] == update]
    assert [e["position"] for e in by_deployment] == [e["position"] for e in task_events]
    assert len(task_events) > 10
    # The drain is one filter away: by instance, by job/index, by disk.
    for filters in ({"job": "db", "index": 0}, {"disk_cid": "disk-db-0"},
                    {"instance_id": server.api("GET", "/deployments/prod")["instances"][0]["id"]}):
        found = [e for e in events(server, task_id=update, **filters)]
        types = [e["type"] for e in found]
        assert {"JobUpdate.DrainStarted", "JobUpdate.DrainCompleted", "JobUpdate.JobStopped",
                "JobUpdate.ReadyForUpdate", "Snapshot.Taken"} <= set(types), (filters, types)
        assert all(e["deployment"] == "prod" and e["instance"] == "db/0" for e in found
                   if e["type"].startswith("JobUpdate.") and e["type"] != "JobUpdate.Announced"), found
    # db/1 took no part in the update of db/0.
    assert events(server, deployment="prod", job="db", index=1, task_id=update) == []

    # The clean snapshot's history links to the drain that made it clean (argv and env included).
    taken = next(e for e in task_events if e["type"] == "Snapshot.Taken")
    cid = taken["data"]["snapshot_cid"]
    life = server.api("GET", f"/snapshots/{cid}/history")
    assert life["job_update"]["task_id"] == update and life["job_update"]["kind"] == "update_job"
    drained = next(e for e in life["job_update"]["events"] if e["type"] == "JobUpdate.DrainCompleted")
    [call] = drained["data"]["result"]["jobs"][0]["calls"]
    assert call["argv"][1:] == ["job_changed", "hash_changed"]
    assert call["env"] == {"BOSH_JOB_STATE": '{"persistent_disk": 1024}',
                           "BOSH_JOB_NEXT_STATE": '{"persistent_disk": 1024}'}
    shown = cli(server.url, "history", cid)
    assert shown.returncode == 0, shown.stderr
    assert f"Made clean by update_job task {update}" in shown.stdout
    assert 'db: drain job_changed hash_changed BOSH_JOB_STATE={"persistent_disk": 1024}' in shown.stdout

    # A restore of the deployment: every event found by -d, the drain by --disk and --job/--index.
    accepted = server.api("POST", f"/deployments/prod/snapshots/{cid}/restore", {})
    restore = accepted["task_id"]
    assert server.wait_task(restore)["state"] == "done"
    task_events = server.api("GET", f"/tasks/{restore}/events")
    by_deployment = [e for e in events(server, deployment="prod") if e["task_id"] == restore]
    assert [e["position"] for e in by_deployment] == [e["position"] for e in task_events]
    for filters in ({"job": "db", "index": 0}, {"disk_cid": "disk-db-0"}):
        types = [e["type"] for e in events(server, task_id=restore, **filters)]
        assert {"Restore.DrainStarted", "Restore.DrainCompleted", "Restore.JobStopped", "Restore.Restored"} \
            <= set(types), (filters, types)
    safety = next(e for e in task_events if e["type"] == "Restore.SafetySnapshotTaken")["data"]["snapshot_cid"]
    life = server.api("GET", f"/snapshots/{safety}/history")
    assert life["job_update"]["kind"] == "restore" and life["job_update"]["task_id"] == restore
    assert "Restore.DrainCompleted" in [e["type"] for e in life["job_update"]["events"]]


@pytest.mark.parametrize("fact,value", [("persistent_disk", -1), ("persistent_disk", "big"), ("persistent_disk", 1.5),
                                        ("agent_id", ""), ("agent_id", 7)])
def test_bad_inventory_facts_are_refused_naming_the_field(server: Server, fact: str, value: Any) -> None:
    import urllib.error

    body = {"instances": [{"job": "db", "index": 0, "disks": ["disk-db-0"], fact: value}]}
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.api("PUT", "/deployments/prod", body)
    assert refused.value.code == 400
    error = json.loads(refused.value.read())
    assert error["field"].startswith("instances") and fact in json.dumps(error), error
    # Nothing was lost: the recorded inventory is unchanged.
    assert server.api("GET", "/deployments/prod")["instances"][0]["persistent_disk"] == 1024
