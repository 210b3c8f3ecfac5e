"""ruff and mypy, as CI runs them: `.ci/run` runs the README's test command, so
this test is how CI runs the linter and the type checker (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # mypy over the package takes tens of seconds: scheduled first (tests/conftest.py)


@pytest.mark.timeout(600)  # mypy over the whole package, cold, on a loaded machine
@pytest.mark.parametrize("check", ["ruff", "mypy"])
def test_static_check_is_clean(check: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "ops" / "static_checks.py"), check],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"`python ops/static_checks.py {check}` found problems:\n{result.stdout}{result.stderr}",
                    pytrace=False)
