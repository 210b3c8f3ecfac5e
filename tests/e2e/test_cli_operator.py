"""The CLI an operator expects (issue 18), against one real `snapledger serve` process.

Global options anywhere, `job/index` slugs, a question before anything is
destroyed that shows what goes away, `--no-wait`, and progress that reads
well for a deployment of 50 instances.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from support.process import Server, cli

INSTANCES = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("operator") / "data"
    for cid in ["disk-a", "disk-b", *(f"big-{i}" for i in range(INSTANCES))]:
        (data_dir / "disks" / cid).mkdir(parents=True)
        (data_dir / "disks" / cid / "file").write_text(cid)
    server = Server(data_dir).start()
    server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
    server.api("PUT", "/deployments/big", {"instances": [
        {"job": "cell", "index": i, "disks": [f"big-{i}"]} for i in range(INSTANCES)]})
    yield server
    server.stop()


@pytest.fixture
def web(server: Server) -> Server:
    """Deployment `web` (db/0 with disk-a, db/1 with disk-b), without snapshots."""
    server.api("PUT", "/deployments/web", {"instances": [
        {"job": "db", "index": 0, "disks": ["disk-a"]}, {"job": "db", "index": 1, "disks": ["disk-b"]}]})
    cids = [r["snapshot_cid"] for r in server.api("GET", "/deployments/web/snapshots")]
    if cids:
        server.wait_task(server.api("DELETE", "/deployments/web/snapshots")["task_id"])
    return server


def run(server: Server, *args: str, input: str | None = None, tz: str = "UTC") -> Any:
    return cli(server.url, *args, input=input, env={"TZ": tz})


def listing(server: Server, deployment: str = "web") -> list[dict[str, Any]]:
    return server.api("GET", f"/deployments/{deployment}/snapshots")


def take(server: Server, slug: str) -> str:
    job, index = slug.split("/")
    server.wait_task(server.api("POST", f"/deployments/web/jobs/{job}/{index}/snapshots")["task_id"])
    return listing(server)[-1]["snapshot_cid"]


def test_global_options_anywhere(web: Server) -> None:
    take(web, "db/0")
    before = run(web, "--json", "snapshots", "-d", "web")
    after = run(web, "snapshots", "-d", "web", "--json")
    assert before.returncode == after.returncode == 0
    assert json.loads(after.stdout) == json.loads(before.stdout) and len(json.loads(after.stdout)) == 1
    # --url after the command too (the helper puts a wrong one first: the later one wins, as in bosh)
    moved = cli("http://127.0.0.1:9", "snapshots", "-d", "web", "--url", web.url, "--json",
                env={"SNAPLEDGER_CREDENTIALS": str(web.data_dir / "credentials.json")})
    assert moved.returncode == 0 and json.loads(moved.stdout) == json.loads(before.stdout)
    # -n is global: after the command it skips the question.
    result = run(web, "delete-snapshots", "-d", "web", "-n")
    assert result.returncode == 0, result.stderr
    assert listing(web) == []
    # A command's own option of the same name stays the command's.
    hashed = run(web, "hash-secret", "--secret", "s3cret")
    assert hashed.returncode == 0 and hashed.stdout.startswith("$argon2")


def test_instance_slugs(web: Server) -> None:
    result = run(web, "take-snapshot", "-d", "web", "db/1")
    assert result.returncode == 0, result.stderr
    assert [r["disk_cid"] for r in listing(web)] == ["disk-b"]
    instance_id = web.api("GET", "/deployments/web")["instances"][0]["id"]
    assert run(web, "take-snapshot", "-d", "web", f"db/{instance_id}").returncode == 0
    rows = json.loads(run(web, "--json", "snapshots", "-d", "web", "db/0").stdout)
    assert [r["disk_cid"] for r in rows] == ["disk-a"]
    audit = run(web, "--json", "audit", "--instance", "db/0", "--type", "Snapshot.Taken")
    assert [json.loads(line)["disk_cid"] for line in audit.stdout.splitlines()][-1:] == ["disk-a"]
    for bad in (["db/"], ["/0"], ["db/0/1"], ["db/0", "1"]):
        result = run(web, "take-snapshot", "-d", "web", *bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "JOB/INDEX" in result.stderr or "once" in result.stderr


def test_delete_snapshot_asks_and_shows_what_goes(web: Server) -> None:
    cid = take(web, "db/0")
    declined = run(web, "delete-snapshot", "-d", "web", cid, input="n\n")
    assert declined.returncode == 1 and "nothing done" in declined.stderr
    assert cid in declined.stdout and "db/0" in declined.stdout and "disk-a" in declined.stdout
    no_answer = run(web, "delete-snapshot", "-d", "web", cid)  # stdin closed, as in a script without -n
    assert no_answer.returncode == 1 and "pass -n" in no_answer.stderr and "Traceback" not in no_answer.stderr
    assert [r["snapshot_cid"] for r in listing(web)] == [cid]  # still there
    agreed = run(web, "delete-snapshot", "-d", "web", cid, input="y\n")
    assert agreed.returncode == 0 and "deleted" in agreed.stdout
    assert listing(web) == []


def test_delete_snapshots_shows_how_many(web: Server) -> None:
    for slug in ("db/0", "db/1", "db/1"):
        take(web, slug)
    declined = run(web, "delete-snapshots", "-d", "web", input="\n")  # the default is no
    assert declined.returncode == 1 and "Delete all 3 snapshot(s)" in declined.stdout
    assert declined.stdout.count("  - snap-") == 3 and len(listing(web)) == 3


def test_deploy_that_removes_instances_asks(web: Server, tmp_path: Path) -> None:
    spec = tmp_path / "web.yml"
    spec.write_text("name: web\ninstances:\n  - {job: db, index: 0, disks: [disk-a]}\n")
    declined = run(web, "deploy", str(spec), input="n\n")
    assert declined.returncode == 1 and "db/1 (disks: disk-b)" in declined.stdout
    assert len(web.api("GET", "/deployments/web")["instances"]) == 2  # unchanged
    assert run(web, "deploy", str(spec), "-n").returncode == 0
    assert len(web.api("GET", "/deployments/web")["instances"]) == 1
    # Adding instances removes nothing: no question.
    spec.write_text("name: web\ninstances:\n  - {job: db, index: 0, disks: [disk-a]}\n"
                    "  - {job: db, index: 1, disks: [disk-b]}\n")
    added = run(web, "deploy", str(spec))
    assert added.returncode == 0 and "?" not in added.stdout


def test_in_place_restore_asks(web: Server) -> None:
    cid = take(web, "db/0")
    declined = run(web, "restore", "-d", "web", cid, input="n\n")
    assert declined.returncode == 1
    assert "db/0 will be drained and stopped" in declined.stdout and "disk-a" in declined.stdout
    assert all(t["kind"] != "restore" for t in web.api("GET", "/tasks?deployment=web"))


def test_no_wait_on_every_task_command(web: Server) -> None:
    cid = take(web, "db/0")
    commands = [["take-snapshot", "-d", "web", "db/1"], ["delete-snapshot", "-d", "web", cid, "-n"],
                ["delete-snapshots", "-d", "web", "-n"], ["retention", "-d", "web", "--run"],
                ["update-job", "-d", "web", "db/0"]]
    for args in commands:
        result = run(web, *args, "--no-wait", "--json")
        assert result.returncode == 0, (args, result.stderr)
        task_id = json.loads(result.stdout)["task_id"]
        assert web.wait_task(task_id)["state"] in ("done", "error")
        text = run(web, *args[:1], "--help").stdout
        assert "--no-wait" in text, args


def test_progress_for_50_instances(server: Server) -> None:
    result = run(server, "take-snapshot", "-d", "big", tz="Europe/Berlin")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    disk_lines = [line for line in lines if re.match(r"^\d\d:\d\d:\d\d CET  \d+/50  cell/\d+ disk big-\d+: taken ", line)]
    assert len(disk_lines) == INSTANCES, result.stdout  # one line per disk, times with their zone
    assert [int(line.split()[2].split("/")[0]) for line in disk_lines] == list(range(1, INSTANCES + 1))
    assert "None" not in result.stdout
    assert not re.search(r"\b(Task|Snapshot)\.[A-Z]", result.stdout)  # no raw event names
    summaries = [line for line in lines if " done at " in line]
    assert len(summaries) == 1 and "(50/50 disks: 50 taken)" in summaries[0]
    assert len(summaries[0]) < 300  # the result lists 50 CIDs: shortened
    assert len(lines) <= INSTANCES + 4

    # `tasks` shortens long results; `task` without an id shows the latest.
    task_id = summaries[0].split()[1]
    row = next(line for line in run(server, "tasks").stdout.splitlines() if line.startswith(task_id))
    assert "…" in row and len(row) < 250 and "UTC" in row
    latest = run(server, "task", tz="Europe/Berlin")
    assert latest.returncode == 0 and f"Task {task_id} done at" in latest.stdout
