"""Running the real `snapledger` executable in tests."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

SNAPLEDGER = str(Path(sys.executable).parent / "snapledger")
# The credentials file each running server wrote (its admin), by URL, for `cli()`.
CREDENTIALS: dict[str, Path] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: Any, timeout: float = 30.0) -> Any:
    """Polls `what()` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    """`snapledger serve` (or another role) as a child process."""

    def __init__(self, data_dir: Path, database: str | None = None, command: str = "serve",
                 port: int | None = None, env: dict[str, str] | None = None,
                 config: Path | None = None, tls: bool = False, extra_args: list[str] | None = None) -> None:
        # Plain HTTP is asked for explicitly (`--plain-http`, issue 17) unless a
        # test wants the default, HTTPS with the service's own CA (D/ca.pem).
        self.tls = tls
        self.extra_args = list(extra_args or [])
        self.data_dir = data_dir
        self.config = config  # --config FILE
        self.database = database
        self.command = command
        self.port = port or free_port()
        self.env = {**os.environ, "SNAPLEDGER_LOG_FORMAT": "json", "SNAPLEDGER_POLL_INTERVAL": "0.05",
                    **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{command}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ssl_context(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=str(self.data_dir / "ca.pem")) if self.tls else None

    def start(self, wait: bool = True) -> Server:
        """`wait=False`: do not wait for the API (a run expected to die early)."""
        args = [SNAPLEDGER, self.command, "--data-dir", str(self.data_dir), "--port", str(self.port)]
        if self.database:
            args += ["--database", self.database]
        if self.config:
            args += ["--config", str(self.config)]
        if not self.tls and self.command in ("serve", "api"):
            args.append("--plain-http")
        args += self.extra_args
        self.proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("ab"), start_new_session=True)
        if self.command in ("serve", "api") and wait:
            self.wait_ready()
            CREDENTIALS[self.url] = self.data_dir / "credentials.json"
        return self

    @property
    def authorization(self) -> str:
        data = json.loads((self.data_dir / "credentials.json").read_text())
        return "Basic " + base64.b64encode(f"{data['user']}:{data['secret']}".encode()).decode()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1, context=self.ssl_context).read()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": self.authorization})
        with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as resp:
            return json.loads(resp.read())

    def wait_task(self, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.api("GET", f"/tasks/{task_id}")
            if task["state"] in ("done", "error"):
                return task
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} unfinished: {task}")


def cli(url: str, *args: str, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with the credentials the server at `url` wrote."""
    full_env = {**os.environ, **(env or {})}
    if url in CREDENTIALS and "SNAPLEDGER_CREDENTIALS" not in full_env:
        full_env["SNAPLEDGER_CREDENTIALS"] = str(CREDENTIALS[url])
    return subprocess.run([SNAPLEDGER, "--url", url, *args], capture_output=True, text=True, input=input,
                          timeout=60, env=full_env)
