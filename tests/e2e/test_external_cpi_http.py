"""A deployment on an external CPI (a real subprocess speaking the BOSH protocol)
over HTTP: take, list, delete, delete-all, self snapshots, and every failure
mode of the CPI as the outcome an operator reads in the task's events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.fake_cpi_helpers import (
    add_disk, make_fake_cpi, process_gone, read_requests, set_faults, snapshot_file, wait_for_file,
)
from support.runtime import api_client, make_config, wait_task

FAST_RETRY = {"attempts": 3, "base_delay": 0.01, "max_delay": 0.05}


def external_config(tmp_path: Path, database: str, faults: dict[str, Any] | None = None, *,
                    timeout: float = 20, **cpi_config: Any) -> tuple[Any, Path]:
    executable, state = make_fake_cpi(tmp_path, faults, **cpi_config)
    config = make_config(tmp_path, database, cpis={
        "aws": {"type": "external", "executable": str(executable), "timeout": timeout, "retry": FAST_RETRY,
                "properties": {"region": "eu-west-1"}},
    })
    return config, state


async def deploy(client: Any, state: Path, name: str = "prod", disks: int = 2, **extra: Any) -> list[str]:
    cids = [add_disk(state) for _ in range(disks)]
    body = {"tags": {"team": "storage"}, "instances": [
        {"job": "db", "index": i, "disks": [cid]} for i, cid in enumerate(cids)], **extra}
    resp = await client.put(f"/deployments/{name}", json=body)
    assert resp.status == 200, await resp.text()
    resp = await client.put("/config/snapshots", json={"enable_snapshots": True})
    assert resp.status == 200
    return cids


async def run_task(client: Any, method: str, url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    resp = await client.request(method, url)
    assert resp.status == 202, await resp.text()
    task = await wait_task(client, (await resp.json())["task_id"])
    events = await (await client.get(f"/tasks/{task['id']}/events")).json()
    return task, events


def of_type(events: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] in types]


async def test_take_list_delete_and_delete_all_through_an_external_cpi(tmp_path: Path, store_url: str) -> None:
    config, state = external_config(tmp_path, store_url)
    async with api_client(config) as client:
        disks = await deploy(client, state)
        task, events = await run_task(client, "POST", "/deployments/prod/snapshots")
        assert task["state"] == "done", task
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert sorted(r["disk_cid"] for r in listing) == sorted(disks)
        for row in listing:
            # The CPI really holds each snapshot, with BOSH's metadata plus the deployment's tags.
            metadata = json.loads(snapshot_file(state, row["snapshot_cid"]).read_text())
            assert metadata["deployment"] == "prod" and metadata["job"] == "db"
            assert metadata["team"] == "storage" and metadata["director_name"] == "snapledger"
            assert metadata["snapledger_operation_id"]
        # Each request carried the CPI's properties in its context and a fresh request id.
        snaps = [r for r in read_requests(state) if r["method_name"] == "snapshot_disk"]
        assert len(snaps) == 2 and all(r["context"]["region"] == "eu-west-1" for r in snaps)

        # The task's CPI log: one entry per call with the CPI's log and stderr, the
        # process's first call, `info`, included (it is asked once, before the first snapshot_disk).
        log = await (await client.get(f"/tasks/{task['id']}/cpi-log")).json()
        methods = [e["method"] for e in log]
        assert sorted(methods) == ["info", "snapshot_disk", "snapshot_disk"] and methods[-1] == "snapshot_disk"
        for entry in log:
            assert entry["cpi"] == "aws" and entry["error"] is None
            assert f"fake_cpi: {entry['method']} {entry['request_id']}" in entry["stderr"]
            assert f"request_id={entry['request_id']}" in entry["log"]

        first = listing[0]["snapshot_cid"]
        task, _ = await run_task(client, "DELETE", f"/deployments/prod/snapshots/{first}")
        assert task["state"] == "done" and not snapshot_file(state, first).exists()
        task, _ = await run_task(client, "DELETE", "/deployments/prod/snapshots")
        assert task["state"] == "done"
        assert await (await client.get("/deployments/prod/snapshots")).json() == []
        assert list((state / "snapshots").iterdir()) == []


async def run_with_fault(tmp_path: Path, database: str, method: str, fault: dict[str, Any],
                         **cpi: Any) -> tuple[Any, dict[str, Any], list[dict[str, Any]], Path]:
    """Take one snapshot (and, for delete faults, delete it) with `fault` on `method`."""
    config, state = external_config(tmp_path, database, **cpi)
    client_cm = api_client(config)
    client = await client_cm.__aenter__()
    try:
        await deploy(client, state, disks=1)
        if method == "snapshot_disk":
            set_faults(state, {method: fault})
            task, events = await run_task(client, "POST", "/deployments/prod/snapshots")
        else:
            task, _ = await run_task(client, "POST", "/deployments/prod/snapshots")
            cid = (await (await client.get("/deployments/prod/snapshots")).json())[0]["snapshot_cid"]
            set_faults(state, {method: fault})
            task, events = await run_task(client, "DELETE", f"/deployments/prod/snapshots/{cid}")
        log = await (await client.get(f"/tasks/{task['id']}/cpi-log")).json()
        # The process's one `info` call is in the first task's CPI log (its own entry, ok):
        # these tests look at the calls of the method under test.
        assert all(e["error"] is None for e in log if e["method"] == "info")
        log = [e for e in log if e["method"] != "info"]
        listing = await (await client.get("/deployments/prod/snapshots")).json()
    finally:
        await client_cm.__aexit__(None, None, None)
    return {"log": log, "listing": listing}, task, events, state


@pytest.mark.parametrize("fault,says", [
    ({"mode": "not_implemented"}, "Must implement method: snapshot_disk"),
    # The legacy answer of bosh-cpi-ruby for a method it does not know.
    ({"mode": "error", "type": "InvalidCall", "message": "Method is not known, got 'snapshot_disk'"},
     "Method is not known"),
])
async def test_not_implemented_is_skipped_not_failed(tmp_path: Path, sqlite_url: str, fault: dict[str, Any],
                                                     says: str) -> None:
    seen, task, events, _ = await run_with_fault(tmp_path, sqlite_url, "snapshot_disk", fault)
    assert task["state"] == "done"
    (skipped,) = of_type(events, "Snapshot.Skipped")
    assert "does not support disk snapshots" in skipped["data"]["reason"]
    assert says in skipped["data"]["reason"]
    assert seen["listing"] == []


async def test_retryable_errors_are_retried_each_attempt_an_event(tmp_path: Path, store_url: str) -> None:
    fault = {"mode": "error", "ok_to_retry": True, "times": 2, "message": "rate limited"}
    seen, task, events, _ = await run_with_fault(tmp_path, store_url, "snapshot_disk", fault)
    assert task["state"] == "done", task
    attempts = of_type(events, "Snapshot.CpiCallStarted", "Snapshot.AttemptFailed", "Snapshot.Taken")
    assert [(e["type"], e["data"].get("attempt")) for e in attempts] == [
        ("Snapshot.CpiCallStarted", 1), ("Snapshot.AttemptFailed", 1),
        ("Snapshot.CpiCallStarted", 2), ("Snapshot.AttemptFailed", 2),
        ("Snapshot.CpiCallStarted", 3), ("Snapshot.Taken", None)]
    failed = of_type(events, "Snapshot.AttemptFailed")
    assert all(e["data"]["error"]["message"] == "rate limited" and 0 <= e["data"]["retry_in_s"] <= 0.05
               for e in failed)
    # Three calls, three request ids, all in the CPI log.
    assert len({e["request_id"] for e in seen["log"]}) == 3 and len(seen["listing"]) == 1


async def test_retries_are_bounded_then_failed(tmp_path: Path, sqlite_url: str) -> None:
    fault = {"mode": "error", "ok_to_retry": True, "message": "still throttled"}
    seen, task, events, state = await run_with_fault(tmp_path, sqlite_url, "snapshot_disk", fault)
    assert task["state"] == "error" and "after 3 attempts" in task["result"], task
    assert len(of_type(events, "Snapshot.AttemptFailed")) == 2
    (failed,) = of_type(events, "Snapshot.Failed")
    assert failed["data"]["error"]["message"] == "still throttled"
    assert len([r for r in read_requests(state) if r["method_name"] == "snapshot_disk"]) == 3


@pytest.mark.parametrize("fault,error_type,says", [
    ({"mode": "error", "type": "Bosh::Clouds::CloudError", "message": "volume busy"},
     "Bosh::Clouds::CloudError", "volume busy"),
    ({"mode": "error", "type": "Bosh::Clouds::NoDiskSpace", "message": "quota"}, "Bosh::Clouds::NoDiskSpace", "quota"),
    ({"mode": "garbage"}, "Snapledger::Cpi::InvalidResponse", "502 Bad Gateway"),
    ({"mode": "bad_schema", "variant": "wrong_types"}, "Snapledger::Cpi::InvalidResponse", "SchemaValidationError"),
    ({"mode": "unknown_error", "message": "odd"}, "Snapledger::Cpi::UnknownError", "Foo::Bar"),
])
async def test_failures_are_recorded_with_type_and_message(tmp_path: Path, sqlite_url: str, fault: dict[str, Any],
                                                           error_type: str, says: str) -> None:
    seen, task, events, _ = await run_with_fault(tmp_path, sqlite_url, "snapshot_disk", fault)
    assert task["state"] == "error"
    (failed,) = of_type(events, "Snapshot.Failed")
    assert failed["data"]["error"]["type"] == error_type and says in failed["data"]["error"]["message"]
    assert error_type in task["result"] and "db/0" in task["result"]
    (entry,) = seen["log"]
    assert entry["error"]["type"] == error_type and entry["stderr"].startswith("fake_cpi: snapshot_disk")
    if fault["mode"] == "garbage":
        assert "502 Bad Gateway" in entry["stdout"]  # the unusable answer is kept for the operator


async def test_a_hanging_cpi_is_killed_with_its_process_group(tmp_path: Path, sqlite_url: str) -> None:
    # 4 s: long enough for the test CPI (a Python process) to start and spawn its child on a busy machine.
    seen, task, events, state = await run_with_fault(tmp_path, sqlite_url, "snapshot_disk", {"mode": "hang"},
                                                     timeout=4)
    (failed,) = of_type(events, "Snapshot.Failed")
    assert failed["data"]["error"]["type"] == "Snapledger::Cpi::TimedOut"
    assert task["state"] == "error"
    child = int(wait_for_file(state / "hang_child.pid"))
    assert process_gone(child)  # the grandchild died with the group


async def test_a_cpi_path_that_is_not_executable_fails_clearly(tmp_path: Path, sqlite_url: str) -> None:
    config, state = external_config(tmp_path, sqlite_url)
    config.cpis["aws"]["executable"] = str(tmp_path / "no-such-cpi")
    async with api_client(config) as client:
        await deploy(client, state, disks=1)
        task, events = await run_task(client, "POST", "/deployments/prod/snapshots")
    (failed,) = of_type(events, "Snapshot.Failed")
    assert failed["data"]["error"]["type"] == "Snapledger::Cpi::NonExecutable"
    assert "no-such-cpi" in failed["data"]["error"]["message"] and task["state"] == "error"


async def test_delete_of_a_snapshot_gone_from_the_iaas_is_a_deletion(tmp_path: Path, store_url: str) -> None:
    fault = {"mode": "error", "type": "Bosh::Clouds::DiskNotFound", "message": "snapshot snap-x not found"}
    seen, task, events, _ = await run_with_fault(tmp_path, store_url, "delete_snapshot", fault)
    assert task["state"] == "done"
    (deleted,) = of_type(events, "Snapshot.Deleted")
    assert "already gone in the IaaS" in deleted["data"]["reason"]
    assert seen["listing"] == []


async def test_self_snapshots_are_listed_and_deletable(tmp_path: Path, store_url: str) -> None:
    config, state = external_config(tmp_path, store_url, vm_id="i-director")
    disks = [add_disk(state), add_disk(state)]
    from support.fake_cpi_helpers import update_config

    update_config(state, vm_disks=disks)
    async with api_client(config) as client:
        assert (await client.put("/config/snapshots", json={"enable_snapshots": True})).status == 200
        task, events = await run_task(client, "POST", "/self/snapshots")
        assert task["state"] == "done", task
        calls = [r["method_name"] for r in read_requests(state) if r["method_name"] != "info"]
        assert calls[calls.index("current_vm_id"):] == ["current_vm_id", "get_disks", "snapshot_disk", "snapshot_disk"] \
            or sorted(calls[-4:]) == sorted(["current_vm_id", "get_disks", "snapshot_disk", "snapshot_disk"])
        listing = await (await client.get("/deployments/_self/snapshots")).json()
        assert sorted(r["disk_cid"] for r in listing) == sorted(disks)
        assert all(r["instance_id"] == "i-director" for r in listing)
        task, _ = await run_task(client, "DELETE", f"/deployments/_self/snapshots/{listing[0]['snapshot_cid']}")
        assert task["state"] == "done"
        assert len(await (await client.get("/deployments/_self/snapshots")).json()) == 1


async def test_self_snapshot_on_a_cpi_without_current_vm_id_is_skipped(tmp_path: Path, sqlite_url: str) -> None:
    config, state = external_config(tmp_path, sqlite_url, {"current_vm_id": {"mode": "not_implemented"}})
    async with api_client(config) as client:
        assert (await client.put("/config/snapshots", json={"enable_snapshots": True})).status == 200
        task, events = await run_task(client, "POST", "/self/snapshots")
    assert task["state"] == "done"
    (skipped,) = of_type(events, "SelfDiscovery.Skipped")
    assert "current_vm_id" in skipped["data"]["reason"]


async def test_each_deployment_uses_its_named_cpi(tmp_path: Path, store_url: str) -> None:
    executable, state = make_fake_cpi(tmp_path)
    config = make_config(tmp_path, store_url, default_cpi="local", cpis={
        "local": {"type": "local"},
        "aws": {"type": "external", "executable": str(executable)},
    })
    (config.data_dir / "disks" / "disk-local").mkdir(parents=True)
    async with api_client(config) as client:
        aws_disk = add_disk(state)
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        resp = await client.put("/deployments/cloud", json={"cpi": "aws", "instances": [
            {"job": "db", "index": 0, "disks": [aws_disk]}]})
        assert resp.status == 200 and (await resp.json())["cpi"] == "aws"
        resp = await client.put("/deployments/home", json={"instances": [
            {"job": "db", "index": 0, "disks": ["disk-local"]}]})
        assert resp.status == 200
        resp = await client.put("/deployments/bad", json={"cpi": "gcp", "instances": []})
        assert resp.status == 400 and (await resp.json())["field"] == "cpi"

        for name in ("cloud", "home"):
            task, _ = await run_task(client, "POST", f"/deployments/{name}/snapshots")
            assert task["state"] == "done", task
        cloud = (await (await client.get("/deployments/cloud/snapshots")).json())[0]["snapshot_cid"]
        home = (await (await client.get("/deployments/home/snapshots")).json())[0]["snapshot_cid"]
        assert snapshot_file(state, cloud).exists()  # in the external CPI's state
        assert (config.data_dir / "snapshots" / home / "data").is_dir()  # in the local CPI's
        assert not snapshot_file(state, home).exists()


# Issue 16 item 3: answers the ledger cannot keep are the call's failure, never a stored CID.
BAD_SNAPSHOT_CIDS = [
    ("x" * 100_000, "100000 characters long"),
    ("../../etc/snap\nX", "must match"),
    ("snap-1\n", "must match"),  # `$` alone would let the newline through
    (42, "string"),  # types: the external adapter's own check
    ("", "empty"),
    (None, "string"),
]


async def test_a_cid_the_api_could_not_address_is_the_calls_failure(tmp_path: Path, store_url: str) -> None:
    config, state = external_config(tmp_path, store_url)
    async with api_client(config) as client:
        await deploy(client, state, disks=1)
        for bad, problem in BAD_SNAPSHOT_CIDS:
            set_faults(state, {"snapshot_disk": {"mode": "result", "value": bad}})
            task, events = await run_task(client, "POST", "/deployments/prod/snapshots")
            assert task["state"] == "error", (bad, task)
            (failed,) = of_type(events, "Snapshot.Failed")
            error = failed["data"]["error"]
            assert error["type"] == "Snapledger::Cpi::InvalidResponse" and problem in error["message"], error
            assert "snapshot_disk" in error["message"] and not error["ok_to_retry"]
            assert not of_type(events, "Snapshot.Taken")
            # Nothing of a huge answer is copied onto the events.
            assert sum(len(json.dumps(e)) for e in events) < 40_000
        assert await (await client.get("/deployments/prod/snapshots")).json() == []
        # The CID a valid answer gives is kept as it is.
        set_faults(state, {})
        task, _ = await run_task(client, "POST", "/deployments/prod/snapshots")
        assert task["state"] == "done"
        assert len(await (await client.get("/deployments/prod/snapshots")).json()) == 1


@pytest.mark.parametrize("faults,problem", [
    ({"current_vm_id": {"mode": "result", "value": "vm\n"}}, "'current_vm_id' answered a VM CID that must match"),
    ({"get_disks": {"mode": "result", "value": ["ok-disk", "../etc"]}}, "item 1 must match"),
    ({"get_disks": {"mode": "result", "value": ["d"] * 2}}, "lists a disk twice"),
    ({"get_disks": {"mode": "result", "value": {"d": 1}}}, "must be a list"),
])
async def test_self_discovery_answers_are_checked(tmp_path: Path, sqlite_url: str, faults: dict[str, Any],
                                                  problem: str) -> None:
    config, state = external_config(tmp_path, sqlite_url, faults)
    async with api_client(config) as client:
        assert (await client.put("/config/snapshots", json={"enable_snapshots": True})).status == 200
        task, events = await run_task(client, "POST", "/self/snapshots")
    assert task["state"] == "error", task
    (failed,) = of_type(events, "SelfDiscovery.Failed")
    assert failed["data"]["error"]["type"] == "Snapledger::Cpi::InvalidResponse"
    assert problem in failed["data"]["error"]["message"], failed["data"]["error"]


async def test_a_huge_error_message_is_clipped_where_it_is_recorded(tmp_path: Path, sqlite_url: str) -> None:
    config, state = external_config(tmp_path, sqlite_url, {"snapshot_disk": {"mode": "error", "message": "m" * 200_000}})
    async with api_client(config) as client:
        await deploy(client, state, disks=1)
        task, events = await run_task(client, "POST", "/deployments/prod/snapshots")
    assert task["state"] == "error"
    (failed,) = of_type(events, "Snapshot.Failed")
    assert failed["data"]["error"]["message"].startswith("m" * 4096)
    assert "chars clipped" in failed["data"]["error"]["message"]
    assert sum(len(json.dumps(e)) for e in events) < 60_000
