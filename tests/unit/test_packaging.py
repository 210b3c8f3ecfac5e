"""The built wheel holds every source module under `snapledger/` (catches a
sub-package forgotten in pyproject's package list), builds without
warnings, and each module imports."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ["domain", "projections", "adapters", "api", "scheduler"]


def source_modules() -> set[str]:
    return {f"snapledger/{p.relative_to(ROOT).as_posix()}"
            for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}


def test_wheel_contains_every_module(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
                           check=True, capture_output=True, text=True, timeout=300)
    # pyproject metadata the build backend accepts without complaint (issue 18:
    # an SPDX license expression, not the deprecated {text = ...} table).
    log = built.stdout + built.stderr
    assert "DeprecationWarning" not in log and "BuildBackendWarning" not in log, log[-3000:]
    wheel = next(tmp_path.glob("snapledger-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = source_modules() - names
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    assert not [n for n in names if n.endswith(".py") and not n.startswith("snapledger/")]


def test_every_module_imports() -> None:
    for path in sorted(source_modules()):
        importlib.import_module(path.removesuffix(".py").replace("/", ".").removesuffix(".__init__"))
