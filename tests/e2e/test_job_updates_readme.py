"""The README's job-update section, run as written (bash, curl, jq, the CLI) against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.process import Server, cli

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Job updates"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


@pytest.fixture
def server(tmp_path: Path) -> Server:
    data_dir = tmp_path / ".snapledger"
    for cid in ("disk-db-0", "disk-db-1"):
        (data_dir / "disks" / cid).mkdir(parents=True)
        (data_dir / "disks" / cid / "data.txt").write_text(cid)
    server = Server(data_dir, tls=True).start()  # as the README's reader runs it: HTTPS by default, D/ca.pem
    server.api("PUT", "/deployments/prod", {"instances": [
        {"job": "db", "index": 0, "disks": ["disk-db-0"]}, {"job": "db", "index": 1, "disks": ["disk-db-1"]}]})
    server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
    yield server
    server.stop()


def test_the_readme_job_update_section_works_as_written(server: Server, tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert len(blocks) == 3
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "SNAPLEDGER_URL": server.url}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(blocks)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "go ahead: update db/0" in out and "go ahead: update db/1" in out
    assert "db/0: ready for update" in out  # the CLI shows each step
    listing = server.api("GET", "/deployments/prod/snapshots")
    # db/0 twice (update-job db 0, then the whole job), db/1 once, then both again from curl.
    assert len(listing) == 5
    assert all(r["clean"] is True and r["trigger"] == "job_update" for r in listing)
    rows = [line.split() for line in out.splitlines() if line.startswith("db/")]  # `snapledger snapshots`
    assert len(rows) == 3 and all(row[-2:] == ["true", "job_update"] for row in rows), out


def test_cli_failures_exit_non_zero(server: Server) -> None:
    drain = server.data_dir / "jobs" / "db" / "bin" / "drain"
    drain.parent.mkdir(parents=True)
    drain.write_text("#!/bin/bash\necho 'cluster unhealthy' >&2\nexit 1\n")
    drain.chmod(0o755)
    result = cli(server.url, "update-job", "-d", "prod", "db")
    assert result.returncode == 1
    assert "db/0: drain failed: DrainScriptFailed" in result.stdout and "cluster unhealthy" in result.stdout
    assert "not updated: db/1" in result.stdout
    assert server.api("GET", "/deployments/prod/snapshots") == []

    result = cli(server.url, "update-job", "-d", "prod", "db", "7")
    assert result.returncode == 1 and "not found" in result.stderr
    result = cli(server.url, "update-job", "-d", "prod", "db", "--max-in-flight", "0")
    assert result.returncode == 2
    result = cli(server.url, "update-job", "-d", "prod", "db", "--drain-type", "reboot")
    assert result.returncode == 2

    result = cli(server.url, "--json", "update-job", "-d", "prod", "db", "0", "--no-wait")
    assert result.returncode == 0
    task_id = json.loads(result.stdout)["task_id"]
    assert server.wait_task(task_id)["state"] == "error"
