"""ruff and mypy over the code, as CI runs them (tests/unit/test_static_checks.py).

mypy must see the five code folders as the package `snapledger` they are
installed as (pyproject's package-dir), and the editable install's import hook
is invisible to it: so the check runs over a throw-away tree of symlinks
`snapledger/{domain,projections,adapters,api,scheduler}`.

    python ops/static_checks.py            # both; exit 1 on any finding
    python ops/static_checks.py ruff|mypy  # one of them
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ("domain", "projections", "adapters", "api", "scheduler")


def ruff() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CODE, "tests", "ops"],
                          cwd=ROOT, capture_output=True, text=True)


def mypy() -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="snapledger-mypy-") as tmp:
        package = Path(tmp) / "snapledger"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for folder in CODE:
            (package / folder).symlink_to(ROOT / folder)
        return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                               "--no-incremental", "-p", "snapledger"],
                              cwd=tmp, capture_output=True, text=True)


def main(argv: list[str]) -> int:
    checks = {"ruff": ruff, "mypy": mypy}
    failed = False
    for name in argv or list(checks):
        result = checks[name]()
        sys.stdout.write(result.stdout + result.stderr)
        failed |= result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
