"""A small synchronous client of the HTTP API, used by the CLI (stdlib only).

One connection is kept alive for all of a command's requests: following a
task is a long poll on that connection, not a new connection per poll.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any
from collections.abc import Callable, Iterator

TERMINAL = ("done", "error", "cancelled")
LONG_POLL_S = 30.0  # the server answers a long poll within this (it caps waits at 60 s)
# Answers that mean "the service is not there right now", not "the request is wrong":
# while following a task, these are retried (a restart, a proxy in front of it).
UNAVAILABLE = (0, 502, 503, 504)
IDLE_REUSE_S = 5.0  # a command is not re-sent on a connection idle longer than this (it may be stale)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.body = body


class FollowLost(Exception):
    """The service stayed unreachable while following a task: the task goes on without us."""

    def __init__(self, task_id: str, error: ApiError, waited_s: float) -> None:
        super().__init__(error.message)
        self.task_id = task_id
        self.error = error
        self.waited_s = waited_s


class Client:
    def __init__(self, url: str, timeout: float = 30.0, authorization: str | None = None,
                 cafile: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.authorization = authorization
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._base = parts.path
        self.context = None
        if self._https:
            import ssl

            self.context = ssl.create_default_context(cafile=cafile)
        self._conn: http.client.HTTPConnection | None = None
        self._used_at: float | None = None  # when the kept connection last answered

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._used_at = None, None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = (http.client.HTTPSConnection(self._netloc, timeout=timeout, context=self.context)
                          if self._https else http.client.HTTPConnection(self._netloc, timeout=timeout))
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def request(self, method: str, path: str, payload: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        target = self._base + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = json.dumps(payload).encode() if payload is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.authorization:
            headers["Authorization"] = self.authorization
        if method != "GET" and self._used_at is not None and time.monotonic() - self._used_at > IDLE_REUSE_S:
            self.close()  # a command is sent once: never on a connection the server may have dropped
        status, raw = self._exchange(method, target, data, headers, timeout or self.timeout)
        if status >= 400:
            try:
                body = json.loads(raw)
                message, code = body.get("error", raw.decode()), body.get("code", "")
            except (ValueError, AttributeError):
                body, message, code = None, raw.decode(errors="replace") or f"HTTP {status}", ""
            raise ApiError(status, message, code, body)
        return json.loads(raw) if raw else None

    def _exchange(self, method: str, target: str, data: bytes | None, headers: dict[str, str],
                  timeout: float) -> tuple[int, bytes]:
        # A kept connection the server closed in the meantime fails before any answer: a GET
        # is then sent again on a new connection (a GET changes nothing).
        attempts = 2 if method == "GET" and self._conn is not None else 1
        for attempt in range(attempts):
            try:
                conn = self._connection(timeout)
                conn.request(method, target, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                self.close()
                if attempt + 1 < attempts:
                    continue
                raise ApiError(0, f"lost the connection to snapledger at {self.url}: {error}") from None
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise ApiError(0, f"cannot reach snapledger at {self.url}: {error}") from None
            if response.will_close:
                self.close()
            else:
                self._used_at = time.monotonic()
            return response.status, raw
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def follow_task(self, task_id: str, on_event: Callable[[dict[str, Any]], None],
                    on_unavailable: Callable[[ApiError, float], None] | None = None,
                    on_back: Callable[[], None] | None = None, reconnect_for: float = 120.0,
                    wait: float = LONG_POLL_S) -> dict[str, Any]:
        """Stream the task's events as they happen until it ends; returns the task.

        Each round is one long poll (`?wait=&after=`: it answers when the task's log
        moves or the task ends) and, when it moved, one read of the new events.
        Once the task was read, while the service is unavailable (a restart, a 503) it
        retries with backoff for `reconnect_for` seconds, then raises FollowLost: the task
        itself goes on."""
        lost_at: float | None = None
        delay = 0.25
        seen = False  # a service never reached (a wrong URL) is an error at once, not an outage

        def get(path: str, **params: Any) -> Any:
            nonlocal lost_at, delay, seen
            while True:
                try:
                    answer = self.request("GET", path, params=params, timeout=wait + self.timeout)
                    seen = True
                except ApiError as error:
                    if error.status not in UNAVAILABLE or not seen:
                        raise
                    now = time.monotonic()
                    lost_at = now if lost_at is None else lost_at
                    if now - lost_at >= reconnect_for:
                        raise FollowLost(task_id, error, now - lost_at) from None
                    if on_unavailable is not None:
                        on_unavailable(error, delay)
                    time.sleep(min(delay, max(0.0, lost_at + reconnect_for - now)))
                    delay = min(delay * 2, 5.0)
                    continue
                if lost_at is not None and on_back is not None:
                    on_back()
                lost_at, delay = None, 0.25
                return answer

        after = 0
        task: dict[str, Any] = get(f"/tasks/{task_id}")
        while True:
            while after < task.get("last_event", after + 1):
                events = get(f"/tasks/{task_id}/events", after=after)
                for event in events:
                    after = event["position"]
                    on_event(event)
                if not events:
                    break
            if task["state"] in TERMINAL:
                return task
            task = get(f"/tasks/{task_id}", wait=wait, after=max(after, task.get("last_event", 0)))

    def paged(self, path: str, page: int = 1000) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            rows = self.get(path, limit=page, after=after)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["cursor"]


def basic_authorization(user: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def find_ca_cert(ca_cert: str | None, credentials_file: str | None) -> str | None:
    """The CA to trust: the one given, else the service's own `ca.pem` in the data
    directory this client shares with it (beside the credentials file)."""
    if ca_cert:
        return ca_cert
    from pathlib import Path

    data_dir = Path(credentials_file).parent if credentials_file else Path(".snapledger")
    own = data_dir / "ca.pem"
    return str(own) if own.is_file() else None


def find_credentials(user: str | None, secret: str | None, token: str | None,
                     credentials_file: str | None) -> str | None:
    """The Authorization header to send: explicit flags/env first, then the
    credentials file the embedded default writes on first start."""
    if token:
        return f"Bearer {token}"
    if user and secret:
        return basic_authorization(user, secret)
    from pathlib import Path

    path = Path(credentials_file) if credentials_file else Path(".snapledger") / "credentials.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return basic_authorization(data["user"], data["secret"])
    return None
