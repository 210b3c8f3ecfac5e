"""The built wheel, installed into a fresh virtualenv outside the checkout,
as an operator installs it (`pip install snapledger-*.whl`, dependencies and
all), is a working snapledger: `--version`/`version`, `serve`, a snapshot
through its own CLI, and `replay --verify` of the store it wrote.

Fast enough for CI without the package index on every run: the wheel and its
dependencies' wheels are built once into a wheelhouse (`pip wheel`, from pip's
cache or index), and the fresh venv installs from it alone (`pip install
--no-index --find-links`): the same resolution of the wheel's declared
dependencies an operator's install does, with nothing borrowed from the test
environment. SNAPLEDGER_TEST_WHEELHOUSE=DIR keeps the dependencies' wheels
between runs (the project's own wheel is rebuilt every time)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

from snapledger.api.version import VERSION
from support.process import free_port

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def wheelhouse(tmp_path: Path) -> Path:
    """The project's wheel, freshly built, beside every dependency's."""
    house = Path(os.environ.get("SNAPLEDGER_TEST_WHEELHOUSE") or tmp_path / "wheelhouse")
    house.mkdir(parents=True, exist_ok=True)
    for stale in house.glob("snapledger-*.whl"):
        stale.unlink()
    # The build backend too: building the wheel from that wheelhouse alone (`make wheel` offline) needs it.
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--find-links", str(house),
                            "-w", str(house), str(ROOT), *backend], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    return house


def fresh_venv(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    house = wheelhouse(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "SNAPLEDGER_LOG_FORMAT": "json"}
    installed = run(venv / "bin" / "pip", "install", "--quiet", "--no-index", "--find-links", house,
                    f"snapledger=={VERSION}", cwd=tmp_path, env=env, timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr[-3000:]
    return venv, env


def test_wheel_in_a_fresh_venv_serves_snapshots_and_replays(tmp_path: Path) -> None:
    venv, env = fresh_venv(tmp_path)
    work = tmp_path / "operator"  # no checkout here, nor on any path
    work.mkdir()
    snapledger = venv / "bin" / "snapledger"

    assert run(snapledger, "--version", cwd=work, env=env).stdout.strip() == f"snapledger {VERSION}"
    assert run(snapledger, "version", cwd=work, env=env).stdout.strip() == f"snapledger {VERSION}"
    # Everything it imports comes from the fresh venv: the checkout and the test environment are not on its path.
    paths = run(venv / "bin" / "python", "-c", "import sys, snapledger.api.cli, aiohttp, psycopg; "
                "print(snapledger.api.cli.__file__, aiohttp.__file__, psycopg.__file__, *sys.path, sep=chr(10))",
                cwd=work, env=env).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in paths[:3]), paths
    assert not any(str(ROOT) in p or p.startswith(sys.prefix + "/") for p in paths), paths

    port = free_port()
    url = f"https://127.0.0.1:{port}"  # HTTPS by default, with the service's own CA
    (work / ".snapledger" / "disks" / "disk-db-0").mkdir(parents=True)
    (work / ".snapledger" / "disks" / "disk-db-0" / "data.txt").write_text("orders\n")
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([str(snapledger), "serve", "--port", str(port)], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                ca = ssl.create_default_context(cafile=str(work / ".snapledger" / "ca.pem"))
                urllib.request.urlopen(url + "/health", timeout=1, context=ca).read()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        cli_env = {**env, "SNAPLEDGER_URL": url}
        (work / "prod.yml").write_text("name: prod\ninstances:\n  - {job: db, index: 0, disks: [disk-db-0]}\n")
        for args in (["deploy", "prod.yml"], ["enable-snapshots"], ["take-snapshot", "-d", "prod"]):
            done = run(snapledger, *args, cwd=work, env=cli_env)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        listed = json.loads(run(snapledger, "--json", "snapshots", "-d", "prod", cwd=work, env=cli_env).stdout)
        assert [(s["disk_cid"], s["job"], s["index"], s["state"]) for s in listed] == [("disk-db-0", "db", 0, "taken")]
        info = json.loads(run(snapledger, "--json", "info", cwd=work, env=cli_env).stdout)
        assert info["version"] == VERSION
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]

    replay = run(snapledger, "replay", "--verify", cwd=work, env=env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "equal" in replay.stdout.lower(), replay.stdout
