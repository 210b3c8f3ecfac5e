"""Two real worker processes share one CPI's rate limit (PostgreSQL).

The CPI is a real executable that logs when each call starts, as the IaaS
would count them; the limit must hold over both workers' calls together.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from support.process import Server

CALLS = 600
LIMIT, BURST = 50, 5

CPI = """\
#!/bin/sh
# The IaaS boundary: answers `info` and `snapshot_disk`, logging each call's start.
req=$(cat)
now=$(date +%s.%N)
case "$req" in
  '{"method": "info"'*)
    echo '{"result": {"api_version": 2, "stemcell_formats": ["dummy"]}, "error": null, "log": ""}' ;;
  '{"method": "snapshot_disk"'*)
    echo "$now" >> {log}
    echo "{\\"result\\": \\"snap-$now-$$\\", \\"error\\": null, \\"log\\": \\"\\"}" ;;
  *)
    echo '{"result": null, "error": {"type": "Bosh::Clouds::NotImplemented", "message": "no", "ok_to_retry": false}, "log": ""}' ;;
esac
"""


@pytest.mark.timeout(240)
def test_two_workers_never_exceed_the_cpi_limit_together(tmp_path: Path, pg_url: str) -> None:
    calls_log = tmp_path / "calls.log"
    cpi = tmp_path / "cpi"
    cpi.write_text(CPI.replace("{log}", str(calls_log)))
    cpi.chmod(0o755)
    config = tmp_path / "snapledger.yml"
    config.write_text(textwrap.dedent(f"""\
        worker: {{max_in_flight: 16}}
        cpis:
          aws:
            type: external
            executable: {cpi}
            max_in_flight: 16
            rate_limit: {{calls: {LIMIT}, per: 1s, burst: {BURST}}}
        """))
    env = {"SNAPLEDGER_CONFIG": str(config)}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    api = Server(data_dir, pg_url, command="api", env=env).start()
    workers = [Server(data_dir, pg_url, command="worker", env=env).start() for _ in range(2)]
    projector = Server(data_dir, pg_url, command="projector", env=env).start()
    try:
        api.api("PUT", "/deployments/big", {"instances": [
            {"job": "cell", "index": i, "disks": [f"vol-{i:05d}"]} for i in range(CALLS)]})
        api.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        task = api.wait_task(api.api("POST", "/deployments/big/snapshots")["task_id"], timeout=150)
        assert task["state"] == "done", task
    finally:
        for process in (api, *workers, projector):
            process.kill()
    starts = sorted(float(line) for line in calls_log.read_text().split())
    assert len(starts) == CALLS
    busiest, j = 0, 0
    for i, start in enumerate(starts):  # the most calls that started within any 1 s
        while starts[j] <= start - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    assert busiest <= LIMIT + BURST, busiest
    # The limit, not the CPI, was the bound: the run lasted as the rate says.
    assert starts[-1] - starts[0] >= (CALLS - BURST) / LIMIT - 0.05
    print(json.dumps({"busiest_1s_window": busiest, "run_s": round(starts[-1] - starts[0], 2)}))
