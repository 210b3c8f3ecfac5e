"""The short chaos run on SQLite: one `serve` process, killed (the runs that
found issue 16 item 1). Apart from test_chaos.py so that the two runs, a minute
or more each, go to different test processes (`--dist loadfile`)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow  # minutes: scheduled first (tests/conftest.py)


@pytest.mark.timeout(300)
def test_short_chaos_run_on_sqlite(tmp_path: Path, chaos: ModuleType) -> None:
    report = chaos.run_chaos(tmp_path, f"sqlite:///{tmp_path / 'ledger.sqlite'}", commands=100, kills=8,
                             double_kills=1, seed=20261201, quiesce_timeout=120, progress=lambda line: None)
    print(report)
    assert report["problems"] == [], report
    assert report["lost"] == 0 and report["doubled"] == 0 and report["stuck"] == 0
    assert report["leaked_copies"] == 0 and report["double_kill_rounds"] == ["done"]
