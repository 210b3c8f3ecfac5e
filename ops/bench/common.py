"""Shared pieces of the benchmarks: databases, processes, percentiles, RSS, rows.

Every benchmark returns a list of result rows (`row(...)`): the ledger's
figure, the raw baseline measured in the same run (or None), their ratio, the
target and whether it is met. run.py prints them as one table and writes JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
USER, SECRET = "bench", "bench-secret"


@dataclass
class Context:
    """What every benchmark gets: sizes, where PostgreSQL is, a scratch directory."""

    pg_server: str  # a DSN where we may create a database
    pg_database: str  # postgresql://.../<db> created for this run (dropped after)
    workdir: Path
    small: bool
    sizes: dict[str, Any]
    sqlite: bool = True
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    _secret_hash: list[str] = field(default_factory=list)

    def pg_url(self) -> str:
        """A fresh schema in the run's database."""
        return f"{self.pg_database}?schema=b_{uuid.uuid4().hex[:10]}"

    def sqlite_url(self, name: str) -> str:
        path = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}" / "ledger.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def backends(self) -> list[str]:
        return ["postgres", "sqlite"] if self.sqlite else ["postgres"]

    def url_for(self, backend: str, name: str) -> str:
        return self.pg_url() if backend == "postgres" else self.sqlite_url(name)

    def secret_hash(self) -> str:
        if not self._secret_hash:
            from snapledger.api.auth import hash_secret

            self._secret_hash.append(hash_secret(SECRET))
        return self._secret_hash[0]

    def config_file(self, name: str, database: str, **extra: Any) -> Path:
        """A snapledger config for a server process of this run (auth on, as in production)."""
        data_dir = self.workdir / f"{name}-{uuid.uuid4().hex[:6]}"
        data_dir.mkdir(parents=True)
        config = {
            "data_dir": str(data_dir), "database": database, "enable_snapshots": True,
            # Benchmarks must not fire schedules of their own.
            "snapshot_schedule": "off", "self_snapshot_schedule": "off",
            "auth": {"users": [{"name": USER, "secret_hash": self.secret_hash(), "scopes": ["snapledger.admin"]}]},
            # Per-request info logs would be measured too; warnings still show.
            "log": {"level": "warning", "format": "json"},
            "poll_interval": 0.5,
            **extra,
        }
        path = data_dir / "config.json"  # JSON is YAML
        path.write_text(json.dumps(config))
        return path


def auth_header() -> str:
    import base64

    return "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()


def row(benchmark: str, backend: str, metric: str, ledger: float | None, baseline: float | None = None,
        unit: str = "", target: str = "", met: bool | None = None, **extra: Any) -> dict[str, Any]:
    ratio = None
    if ledger is not None and baseline:
        ratio = round(ledger / baseline, 3)
    return {"benchmark": benchmark, "backend": backend, "metric": metric, "unit": unit,
            "ledger": _round(ledger), "baseline": _round(baseline), "ratio": ratio, "target": target,
            "met": met, **extra}


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3 if abs(value) < 100 else 1)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer in {timeout}s")


class Proc:
    """A child process with its output in a log file; RSS sampled from /proc."""

    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.logfile = workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._out = self.logfile.open("wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._out.flush()
        return self.logfile.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the process's peak resident set so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mb() -> float:
    return peak_rss_mb(os.getpid()) or 0.0


def server(ctx: Context, name: str, database: str, roles: str, cpi: str = "", **config: Any) -> tuple[Proc, int]:
    """A snapledger process (bench/server.py: the real runtime with chosen roles)."""
    port = free_port()
    path = ctx.config_file(name, database, listen={"host": "127.0.0.1", "port": port}, **config)
    args = [PYTHON, str(BENCH / "server.py"), "--config", str(path), "--roles", roles]
    if cpi:
        args += ["--cpi", cpi]
    proc = Proc(name, args, ctx.workdir)
    if "api" in roles:
        try:
            wait_http(port, proc=proc.proc)
        except RuntimeError as error:
            proc.stop()
            raise RuntimeError(f"{error}\n{proc.output()}") from None
    return proc, port


def loadgen(ctx: Context, port: int, path: str, concurrency: int = 1, duration: float = 5.0,
            warmup: float = 1.0, rate: float | None = None, record: bool = False,
            method: str = "POST", auth: bool = True) -> dict[str, Any]:
    """Run the load generator in its own process; returns its JSON summary."""
    args = [PYTHON, str(BENCH / "loadgen.py"), "--port", str(port), "--path", path, "--method", method,
            "--concurrency", str(concurrency), "--duration", str(duration), "--warmup", str(warmup)]
    if rate:
        args += ["--rate", str(rate)]
    if record:
        args.append("--record")
    if auth:
        args += ["--authorization", auth_header()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + warmup + 120, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


# PostgreSQL ------------------------------------------------------------------------

@contextmanager
def pg_run_database(server_dsn: str) -> Iterator[str]:
    """A database of our own for this run, dropped at the end (also on failure)."""
    name = f"snapledger_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(server_dsn)
    user = info.get("user", "postgres")
    password = f":{info['password']}" if info.get("password") else ""
    try:
        yield f"postgresql://{user}{password}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def pg_connect(url: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    from snapledger.adapters.store import parse_store_url

    return psycopg.connect(parse_store_url(url).conninfo(), autocommit=autocommit)


def sqlite_path(url: str) -> Path:
    from snapledger.adapters.store import parse_store_url

    path = parse_store_url(url).sqlite_path
    assert path is not None
    return path


def events_table(backend: str) -> str:
    return "ledger_events" if backend == "postgres" else "stored_events"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
