"""The README's restore section, run as written (bash, jq, the CLI) against a real
`snapledger serve`, and the CLI's exit codes and messages for restores."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.process import SNAPLEDGER, Server, cli

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Restore"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def server(tmp_path: Path) -> Server:
    data_dir = tmp_path / ".snapledger"
    for cid in ("disk-db-0", "disk-db-1"):
        (data_dir / "disks" / cid).mkdir(parents=True)
    (data_dir / "disks" / "disk-db-0" / "data.txt").write_text("orders\n")
    (data_dir / "disks" / "disk-db-0" / "logs").mkdir()
    (data_dir / "disks" / "disk-db-0" / "logs" / "1.log").write_bytes(os.urandom(3000))
    drain = data_dir / "jobs" / "db" / "bin" / "drain"
    drain.parent.mkdir(parents=True)
    drain.write_text(f"#!/bin/bash\ncat {data_dir}/disks/disk-db-0/data.txt >&2\necho 0\n")
    drain.chmod(0o755)
    server = Server(data_dir).start()
    server.api("PUT", "/deployments/prod", {"instances": [
        {"job": "db", "index": 0, "disks": ["disk-db-0"]}, {"job": "db", "index": 1, "disks": ["disk-db-1"]}]})
    server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
    yield server
    server.stop()


def test_the_readme_restore_section_works_as_written(server: Server, tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert len(blocks) == 1
    disks = server.data_dir / "disks"
    before = checksums(disks / "disk-db-0")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "SNAPLEDGER_URL": server.url}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[0]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # The restore shows each step, the drain first, and says the jobs stay stopped.
    steps = ["db/0: drain (shutdown) of db", "db/0: drained", "db/0: jobs stopped", "safety snapshot taken",
             "CPI restore_snapshot", "restored "]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions), out
    assert "stay stopped" in out and "\norders\n" in out  # `cat` after the restore
    assert checksums(disks / "disk-db-0") == before
    assert checksums(disks / "disk-db-0-copy") == before
    rows = [line.split() for line in out.splitlines() if line.startswith("db/0")]
    assert [row[-1] for row in rows] == ["manual", "restore_safety"], out  # `snapledger snapshots`
    safety = next(r for r in server.api("GET", "/deployments/prod/snapshots") if r["trigger"] == "restore_safety")
    damaged = server.data_dir / "snapshots" / safety["snapshot_cid"] / "data" / "data.txt"
    assert damaged.read_text() == "orders, damaged\n"
    assert server.api("GET", "/deployments/prod")["restored_disks"][0]["disk_cid"] == "disk-db-0-copy"
    # The restore views (and the audit's stamps) are what a rebuild from the log gives.
    verify = subprocess.run([SNAPLEDGER, "replay", "--data-dir", str(server.data_dir), "--verify"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SNAPLEDGER_LOG_LEVEL": "warning"})
    assert verify.returncode == 0 and "views equal a rebuild" in verify.stdout, verify.stdout + verify.stderr


def test_cli_exit_codes_and_messages(server: Server) -> None:
    task = server.api("POST", "/deployments/prod/jobs/db/0/snapshots")
    assert server.wait_task(task["task_id"])["state"] == "done"
    cid = server.api("GET", "/deployments/prod/snapshots")[0]["snapshot_cid"]

    result = cli(server.url, "restore", "-d", "prod", "snap-missing")
    assert result.returncode == 1 and "Error: snapshot 'snap-missing' not found" in result.stderr
    result = cli(server.url, "restore", cid)  # no deployment
    assert result.returncode == 2 and "--deployment" in result.stderr
    result = cli(server.url, "restore", "-d", "prod", cid, "--to-new-disk", "disk-db-1")
    assert result.returncode == 1 and "disk 'disk-db-1' already exists" in result.stderr
    result = cli(server.url, "restore", "-d", "prod", cid, "--to-new-disk", "../up")
    assert result.returncode == 1 and "to_new_disk" in result.stderr

    # A failing drain: the task ends in error, the CLI exits 1 and says why.
    drain = server.data_dir / "jobs" / "db" / "bin" / "drain"
    drain.write_text("#!/bin/bash\necho 'cluster unhealthy' >&2\nexit 1\n")
    result = cli(server.url, "restore", "-d", "prod", cid, "-n")  # in place: -n, or it asks first
    assert result.returncode == 1
    assert "db/0: drain failed: DrainScriptFailed" in result.stdout and "cluster unhealthy" in result.stdout
    assert "the disk was not touched" in result.stdout

    result = cli(server.url, "--json", "restore", "-d", "prod", cid, "--to-new-disk", "copy-1", "--no-wait")
    assert result.returncode == 0
    task_id = json.loads(result.stdout)["task_id"]
    result = cli(server.url, "task", task_id)  # follows it like any task
    assert result.returncode == 0 and f"restored {cid} into disk copy-1" in result.stdout
