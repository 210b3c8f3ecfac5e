"""The benchmark suite at smoke size (ops/bench/run.py --small): it runs, exits 0
and writes well-formed JSON with every benchmark present. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ["acceptance", "visible", "rebuild", "listing", "fanout", "ratebound"]


@pytest.mark.timeout(300)
def test_bench_suite_runs_at_small_size(tmp_path: Path, pg_server: str | None) -> None:
    if pg_server is None:
        pytest.skip("no PostgreSQL reachable")
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "ops/bench/run.py"), "--small", "--no-sqlite",
                           "--pg", pg_server, "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["meta"]["small"] is True
    for name in BENCHMARKS:
        bench = results["benchmarks"][name]
        assert bench["status"] == "ok", bench
        assert bench["rows"], name
        for row in bench["rows"]:
            assert {"benchmark", "backend", "metric", "ledger", "baseline", "ratio", "target", "met"} <= set(row)
    assert "audit" in results["benchmarks"]  # included when present, else reported as skipped
    assert "| benchmark" in done.stdout  # the table
