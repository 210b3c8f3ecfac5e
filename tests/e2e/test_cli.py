"""The CLI against a real server process: the README tour as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.process import Server, cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    for cid in ("disk-a", "disk-b"):
        (data_dir / "disks" / cid).mkdir(parents=True)
        (data_dir / "disks" / cid / "file").write_text(cid)
    server = Server(data_dir).start()
    yield server
    server.stop()


def test_cli_tour(server: Server, tmp_path: Path) -> None:
    spec = tmp_path / "web.yml"
    spec.write_text("name: web\ntags: {team: blue}\ninstances:\n"
                    "  - {job: db, index: 0, disks: [disk-a]}\n  - {job: db, index: 1, disks: [disk-b]}\n")
    result = cli(server.url, "deploy", str(spec))
    assert result.returncode == 0 and "2 instance(s), 2 disk(s)" in result.stdout

    # Disabled: a clear message and a non-zero exit, never "Succeeded".
    result = cli(server.url, "take-snapshot", "-d", "web")
    assert result.returncode == 1
    assert "snapshots are disabled" in result.stderr and "enable-snapshots" in result.stderr

    assert cli(server.url, "enable-snapshots").returncode == 0
    result = cli(server.url, "take-snapshot", "-d", "web")
    assert result.returncode == 0, result.stderr
    assert "db/0 disk disk-a: taken snap-" in result.stdout and " done at " in result.stdout

    result = cli(server.url, "take-snapshot", "-d", "web", "db", "1")
    assert result.returncode == 0 and "create snapshot" in result.stdout

    table = cli(server.url, "snapshots", "-d", "web").stdout.splitlines()
    assert table[0].split() == ["Instance", "Disk", "CID", "Created", "At", "Clean", "Trigger"]
    assert table[-1] == "3 snapshots"
    rows = json.loads(cli(server.url, "--json", "snapshots", "-d", "web").stdout)
    assert sorted(r["disk_cid"] for r in rows) == ["disk-a", "disk-b", "disk-b"]

    result = cli(server.url, "delete-snapshot", "-d", "web", rows[0]["snapshot_cid"], input="y\n")
    assert result.returncode == 0 and "deleted" in result.stdout
    result = cli(server.url, "delete-snapshot", "-d", "web", rows[0]["snapshot_cid"], "-n")
    assert result.returncode == 1 and "not found" in result.stderr

    result = cli(server.url, "delete-snapshots", "-d", "web", input="n\n")
    assert result.returncode == 1  # declined at the prompt
    assert len(json.loads(cli(server.url, "--json", "snapshots", "-d", "web").stdout)) == 2
    assert cli(server.url, "delete-snapshots", "-d", "web", "-n").returncode == 0
    assert json.loads(cli(server.url, "--json", "snapshots", "-d", "web").stdout) == []

    tasks = json.loads(cli(server.url, "--json", "tasks").stdout)
    assert len(tasks) == 4 and tasks[0]["description"] == "delete deployment snapshots"
    assert "web" in cli(server.url, "deployments").stdout


def test_cli_errors(server: Server, tmp_path: Path) -> None:
    result = cli(server.url, "snapshots", "-d", "no-such-deployment")
    assert result.returncode == 1 and "deployment 'no-such-deployment' not found" in result.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\ninstances: [{job: db, index: -1}]\n")
    result = cli(server.url, "deploy", str(bad))
    assert result.returncode == 2 and "index" in result.stderr
    result = cli("http://127.0.0.1:9", "info")
    assert result.returncode == 1 and "cannot reach snapledger" in result.stderr
    result = cli(server.url, "task", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1 and "not found" in result.stderr
