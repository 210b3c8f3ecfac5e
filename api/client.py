"""A small synchronous client of the HTTP API, used by the CLI (stdlib only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator

TERMINAL = ("done", "error", "cancelled")


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.body = body


class Client:
    def __init__(self, url: str, timeout: float = 30.0, authorization: str | None = None,
                 cafile: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.authorization = authorization
        self.context = None
        if cafile:
            import ssl

            self.context = ssl.create_default_context(cafile=cafile)

    def request(self, method: str, path: str, payload: Any = None, params: dict[str, Any] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.url + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Accept": "application/json"})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.authorization:
            req.add_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                body = json.loads(raw)
                message, code = body.get("error", raw.decode()), body.get("code", "")
            except ValueError:
                body, message, code = None, raw.decode(errors="replace") or error.reason, ""
            raise ApiError(error.code, message, code, body) from None
        except urllib.error.URLError as error:
            raise ApiError(0, f"cannot reach snapledger at {self.url}: {error.reason}") from None
        return json.loads(raw) if raw else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def follow_task(self, task_id: str, on_event: Callable[[dict[str, Any]], None],
                    poll: float = 0.25, timeout: float | None = None) -> dict[str, Any]:
        """Stream the task's events as they happen until it ends; returns the task."""
        after = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            task = self.get(f"/tasks/{task_id}")
            for event in self.get(f"/tasks/{task_id}/events", after=after):
                after = event["position"]
                on_event(event)
            if task["state"] in TERMINAL:
                return task
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(0, f"task {task_id} did not finish within {timeout}s")
            time.sleep(poll)

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
