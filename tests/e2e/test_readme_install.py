"""README "Installing it on a server (systemd, PostgreSQL, TLS)", run as written.

The section's shell block runs line by line under bash, on this machine, as
far as a container allows, and must end with the API answering `/ready` over
HTTPS from a systemd-style start of the installed unit as user `snapledger`,
backed by PostgreSQL:

- In private mount and network namespaces (`unshare -m -n`): `/etc`, `/opt`
  and `/var/lib` are the test's own copies, so `useradd`, `install` into
  `/etc/snapledger` and `/opt/snapledger`, the units in `/etc/systemd/system`
  and port 25555 touch nothing of the host's.
- Real: `make wheel`, the venv and `pip install` of the wheel (from the
  wheelhouse tests/e2e/test_wheel_install.py builds, no index), `useradd`,
  `install`, `tee`, `chmod`, `chgrp`, `createuser`/`createdb` as `postgres`
  (on this machine's PostgreSQL, over its socket), `curl --cacert`.
- Stand-ins, because there is no systemd as PID 1 and no root password here:
  `sudo` runs the command (`-u USER`: as USER, via runuser); `sudoedit` makes
  the edits an operator makes (database, a user's hash, the CPI);
  `systemctl daemon-reload` runs `systemd-analyze verify` on the installed
  units; `systemctl enable --now U` verifies U and starts its `ExecStart` as
  its `User=`, with its `Environment=`, `EnvironmentFile=`,
  `WorkingDirectory=` and `StateDirectory=` (created as systemd does);
  `journalctl -u U -o cat` prints that process's output.
- Not done: the sandboxing options themselves (ProtectSystem=, ...; checked
  by `systemd-analyze verify` only), `Restart=`, the split units (verified,
  not started), and TLS to PostgreSQL (`sslmode=verify-full` needs a database
  server with a certificate; the edit uses the local socket instead).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from test_wheel_install import wheelhouse

ROOT = Path(__file__).resolve().parents[2]
PG_SOCKET = "/var/run/postgresql"
ROLE = "snapledger"  # the README's names: a run owns them on this PostgreSQL while it runs

SUDO = """#!/bin/sh
# sudo without a password prompt: the test runs as root already.
if [ "$1" = "-u" ]; then user="$2"; shift 2; exec runuser -u "$user" -- "$@"; fi
exec "$@"
"""
SUDOEDIT = """#!/bin/sh
exec {python} {support}/operator_edit.py "$1"
"""
JOURNALCTL = """#!/bin/sh
# journalctl -u UNIT -o cat: what the unit's process wrote.
trap '' PIPE
cat "{journal}/$2.log" 2>/dev/null || true
"""
SYSTEMCTL = """#!/bin/bash
# systemctl without systemd: verify the units, start a unit's ExecStart as systemd would.
set -euo pipefail
units=/etc/systemd/system
case "$1" in
  daemon-reload) systemd-analyze verify --man=no "$units"/snapledger*.service ;;
  enable)
    [ "$2" = "--now" ] || exit 0
    unit="$units/$3"
    systemd-analyze verify --man=no "$unit"
    get() {{ sed -n "s/^$1=//p" "$unit"; }}
    user=$(get User); state=/var/lib/$(get StateDirectory)
    install -d -m "$(get StateDirectoryMode)" -o "$user" -g "$(get Group)" "$state"
    envs=()
    while read -r pair; do envs+=("$pair"); done < <(get Environment)
    envfile=$(get EnvironmentFile); envfile=${{envfile#-}}
    if [ -f "$envfile" ]; then while read -r pair; do envs+=("$pair"); done < "$envfile"; fi
    name=$(basename "$3" .service)
    cd "$(get WorkingDirectory)"
    setsid runuser -u "$user" -- env -i PATH=/usr/bin:/bin "${{envs[@]}}" $(get ExecStart) \\
        > "{journal}/$name.log" 2>&1 < /dev/null &
    echo $! > "{journal}/$name.pid" ;;
  *) echo "systemctl stand-in: $* not supported" >&2; exit 1 ;;
esac
"""
OUTER = """set -euo pipefail
T={tmp}
cp -a /etc "$T/etc" && mount --bind "$T/etc" /etc
mkdir -p "$T/opt" "$T/opt-host" "$T/varlib" && mount --bind /opt "$T/opt-host" && mount --bind "$T/opt" /opt
for d in "$T"/opt-host/*; do mkdir -p "/opt/$(basename "$d")" && mount --bind "$d" "/opt/$(basename "$d")"; done
mount --bind "$T/varlib" /var/lib
ip link set lo up
stop() {{ for f in "$T"/journal/*.pid; do [ -f "$f" ] && kill -- "-$(cat "$f")" 2>/dev/null || true; done; sleep 1; }}
trap stop EXIT
cd "$T/checkout"
bash -euo pipefail "$T/readme.sh"
"""


def _readme_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Installing it on a server"):]
    blocks = re.findall(r"```sh\n(.*?)```", section[:section.index("\n## ", 1)], re.S)
    assert len(blocks) == 1
    return blocks[0]


def _can_sandbox() -> bool:
    if os.geteuid() != 0 or not shutil.which("systemd-analyze") or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True).returncode == 0


def _certificates(directory: Path) -> None:
    """The operator's CA (ca.pem) and the API's certificate for this host, as `install` expects them."""
    from snapledger.adapters.tls import _key_pem, _make_ca, _make_server
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key, ca = _make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    host = subprocess.run(["hostname", "-f"], capture_output=True, text=True, check=True).stdout.strip()
    server = _make_server(key, ca_key, ca, [host, "localhost", "127.0.0.1"])
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "db-ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(server.public_bytes(pem))
    (directory / "server-key.pem").write_bytes(_key_pem(key))


def _admin(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    """A superuser session; a server at its connection limit (a loaded shared machine) is waited for."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError as error:
            if "too many clients" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def _drop_role(dsn: str) -> None:
    with _admin(dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ROLE)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


@pytest.mark.timeout(900)
def test_the_readme_install_section_runs_as_written(tmp_path: Path) -> None:
    if not _can_sandbox():
        pytest.skip("needs root, unshare (mount and network namespaces) and systemd-analyze")
    if not Path(PG_SOCKET).exists():
        pytest.skip(f"needs this machine's PostgreSQL on {PG_SOCKET}")
    admin_dsn = f"host={PG_SOCKET} user=postgres dbname=postgres"
    with _admin(admin_dsn) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            pytest.skip(f"PostgreSQL already has a role {ROLE!r}: not ours to drop")
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    _certificates(checkout)
    house = wheelhouse(tmp_path)
    # `make wheel` with a venv of its own that already has what serving needs (the stamp).
    make_venv = tmp_path / "make-venv"
    subprocess.run(["python3", "-m", "venv", str(make_venv)], check=True, capture_output=True, timeout=300)
    (make_venv / ".installed-serve").touch()
    shims, journal = tmp_path / "bin", tmp_path / "journal"
    shims.mkdir()
    journal.mkdir()
    secret = uuid.uuid4().hex
    for name, text in (("sudo", SUDO), ("sudoedit", SUDOEDIT), ("journalctl", JOURNALCTL),
                       ("systemctl", SYSTEMCTL)):
        (shims / name).write_text(text.format(python=sys.executable, support=ROOT / "tests" / "support",
                                              journal=journal, socket=PG_SOCKET))
        (shims / name).chmod(0o755)
    (tmp_path / "readme.sh").write_text(_readme_block())
    env = {"PATH": f"{shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(tmp_path), "VENV": str(make_venv), "PGHOST": PG_SOCKET, "PIP_NO_INDEX": "1",
           "PIP_FIND_LINKS": str(house), "README_INSTALL_SECRET": secret, "LANG": "C.UTF-8"}
    try:
        result = subprocess.run(["unshare", "-m", "-n", "--propagation", "private", "bash", "-c",
                                 OUTER.format(tmp=tmp_path)], env=env, capture_output=True, text=True, timeout=840)
        log = (journal / "snapledger.log").read_text() if (journal / "snapledger.log").exists() else ""
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + log[-3000:]
        out = result.stdout
        assert re.search(r"^snapledger \d+\.\d+\.\d+$", out, re.M), out  # --version from /opt/snapledger
        assert '"status": "ready"' in out, out  # curl --cacert ca.pem https://$(hostname -f):25555/ready
        # (curl's body ends without a newline: the journal's first line follows it on the same line)
        line = next(line for line in out.splitlines() if '"event": "starting"' in line)
        starting = json.loads(line[line.rindex('{"roles"'):])
        assert starting["store"].startswith("postgresql://snapledger@") and starting["scheme"] == "https"
        assert starting["data_dir"] == "/var/lib/snapledger"  # journalctl: the unit's JSON lines
    finally:
        _drop_role(admin_dsn)

