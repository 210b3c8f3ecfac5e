"""ops/prometheus/alerts.yml is valid Prometheus (`promtool check rules`) and
its alerts fire when they should and stay quiet when they should
(`promtool test rules` on ops/prometheus/alerts_test.yml). Skipped without
promtool (Debian package `prometheus`) unless SNAPLEDGER_REQUIRE_PROMTOOL=1,
as CI sets it (.ci/run installs the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool")

if PROMTOOL is None and os.environ.get("SNAPLEDGER_REQUIRE_PROMTOOL") == "1":
    pytest.fail("promtool is required (SNAPLEDGER_REQUIRE_PROMTOOL=1) but not installed", pytrace=False)
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL or "promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_rules_fire_when_they_should() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_alert_fails_the_unit_test(tmp_path: Path) -> None:
    """The unit test can fail: with the margin of the no-snapshot alert
    removed, it fires an hour early and alerts_test.yml says so."""
    (tmp_path / "alerts.yml").write_text((RULES / "alerts.yml").read_text().replace(
        '{schedule="snapshot_schedule"}) + 3600)', '{schedule="snapshot_schedule"}) - 3600)'))
    shutil.copy(RULES / "alerts_test.yml", tmp_path)
    result = subprocess.run([PROMTOOL or "promtool", "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SnapledgerNoRecentSnapshot" in result.stdout + result.stderr
