"""The built wheel, installed into a fresh virtualenv outside the checkout,
is a working snapledger: `--version`/`version`, `serve`, a snapshot through
its own CLI, and `replay --verify` of the store it wrote.

The wheel is installed without its dependencies, which the fresh venv
borrows from the test's environment through a `.pth` line (resolving ~40
packages anew takes minutes on a loaded 2-core box). That line adds the
directory to sys.path only: the editable install's finder there is not
activated, so `snapledger` itself can come only from the wheel, and the test
checks that it does. SNAPLEDGER_WHEEL_FULL_INSTALL=1 installs the wheel with
its dependencies from the package index instead, as an operator would."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

from snapledger.api.version import VERSION
from support.process import free_port

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def fresh_venv(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob(f"snapledger-{VERSION}-py3-none-any.whl"))
    venv = tmp_path / "venv"
    full = os.environ.get("SNAPLEDGER_WHEEL_FULL_INSTALL") == "1"
    subprocess.run([sys.executable, "-m", "venv", *([] if full else ["--without-pip"]), str(venv)],
                   check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    if full:
        subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True, capture_output=True,
                       timeout=900)
    else:
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                        str(wheel)], check=True, capture_output=True, timeout=300)
        site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}).stdout.strip())
        (site / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "SNAPLEDGER_LOG_FORMAT": "json"}
    return venv, env


def test_wheel_in_a_fresh_venv_serves_snapshots_and_replays(tmp_path: Path) -> None:
    venv, env = fresh_venv(tmp_path)
    work = tmp_path / "operator"  # no checkout here, nor on any path
    work.mkdir()
    snapledger = venv / "bin" / "snapledger"

    assert run(snapledger, "--version", cwd=work, env=env).stdout.strip() == f"snapledger {VERSION}"
    assert run(snapledger, "version", cwd=work, env=env).stdout.strip() == f"snapledger {VERSION}"
    where = run(venv / "bin" / "python", "-c", "import snapledger.api.cli as m; print(m.__file__)", cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv) and not Path(where.stdout.strip()).is_relative_to(ROOT)

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
