"""Authentication (HTTP Basic, bearer tokens) and scope-based authorisation.

Credentials are configured users and API clients: a name, an argon2 hash of
the secret, and scopes:

- `snapledger.admin`: everything;
- `snapledger.read`: listings, tasks, audit, schedules;
- `snapledger.deployments.<name>.admin`: everything on that deployment
  (its snapshots, its tasks, its audit and snapshot histories).

Every route declares its access next to its handler (api/routing.py); the
app factory hands the declarations to `auth_middleware`, which refuses a
route without one (and a test walks every registered route).
argon2 is slow by design (~0.1 s), so a verified secret is remembered in
memory by its SHA-256 for a few minutes: a busy client does not pay the hash
on every request.

What wrong credentials may cost others is bounded (issue 16): a remembered
secret is checked on the event loop without any hashing; every other check
runs in a pool of its own (AUTH_WORKERS threads, at most AUTH_MAX_PENDING
waiting), never in the executor of real work; and each source address has a
budget of failed checks (a token bucket): past it, or with the pool full, the
answer is `429` with `Retry-After`, logged, before any hashing. Rejection
itself stays constant-time (an unknown name costs a hash too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from collections.abc import Awaitable, Callable, Iterable, Mapping

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from snapledger.adapters.config import Config, UserEntry
from snapledger.domain.json_types import JsonValue

ADMIN = "snapledger.admin"
READ = "snapledger.read"
TOKEN_PREFIX = "snapledger_"
VERIFIED_TTL_S = 300.0
AUTH_WORKERS = 1  # argon2 threads: wrong secrets get one core at most, real work keeps the rest
AUTH_MAX_PENDING = 16  # checks queued for that pool beyond which a request is told to come back
FAILURE_BURST = 10  # failed checks a source may make at once...
FAILURE_RATE_PER_S = 0.1  # ...and then one per 10 s


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def deployment_admin(name: str) -> str:
    return f"snapledger.deployments.{name}.admin"


class Access(Enum):
    PUBLIC = "public"  # health, readiness, metrics, the API document
    READ = "read"  # read or admin
    ADMIN = "admin"  # admin only
    DEPLOYMENT = "deployment"  # admin, or the path's deployment admin (GET: read too)
    TASK = "task"  # read, admin, or the admin of the task's deployment
    # Reads across deployments (task list, audit, a snapshot's history): read, admin, or the
    # admin of the one deployment the read is confined to (`?deployment=`, the snapshot's).
    SCOPED = "scoped"


@dataclass(frozen=True)
class Credential:
    name: str
    secret_hash: str
    scopes: frozenset[str]

    def allows(self, access: Access, method: str, deployment: str | None) -> bool:
        if ADMIN in self.scopes:
            return True
        if access is Access.READ:
            return READ in self.scopes
        if access is Access.SCOPED:
            return READ in self.scopes or (deployment is not None and deployment_admin(deployment) in self.scopes)
        if access in (Access.DEPLOYMENT, Access.TASK):
            if method in ("GET", "HEAD") and READ in self.scopes:
                return True
            return deployment is not None and deployment_admin(deployment) in self.scopes
        return False


class FailureBudget:
    """Failed authentications per source address: a token bucket each.
    Sources that stop failing are forgotten once their bucket is full again."""

    def __init__(self, burst: int = FAILURE_BURST, rate_per_s: float = FAILURE_RATE_PER_S) -> None:
        self.burst, self.rate = float(burst), rate_per_s
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, source: str, now: float) -> float:
        tokens, at = self._buckets.get(source, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def retry_after(self, source: str) -> float:
        """0 when the source may try; else the seconds until it may."""
        with self._lock:
            tokens = self._tokens(source, time.monotonic())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def failed(self, source: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._buckets[source] = (max(0.0, self._tokens(source, now) - 1), now)
            if len(self._buckets) > 10_000:  # many sources: drop those with a full bucket again
                self._buckets = {s: b for s, b in self._buckets.items() if self._tokens(s, now) < self.burst}


class CredentialStore:
    def __init__(self, credentials: Iterable[Credential]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.by_name = {c.name: c for c in credentials}
        self._hasher = PasswordHasher()
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        # The hashing pool: separate from the runtime's executor and the loop's default one.
        self.executor = ThreadPoolExecutor(max_workers=AUTH_WORKERS, thread_name_prefix="auth")
        self.pending = 0  # checks submitted to the pool and not finished (event-loop thread only)
        self.failures = FailureBudget()

    def remembered(self, name: str, secret: str) -> Credential | None:
        """The credential when this secret was verified recently: a dictionary
        look-up and one SHA-256, cheap enough for the event loop."""
        credential = self.by_name.get(name)
        if credential is None:
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            cached = self._verified.get(name)
        if cached is not None and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], digest):
            return credential
        return None

    def verify(self, name: str, secret: str) -> Credential | None:
        credential = self.by_name.get(name)
        if credential is None:
            self._hasher.hash(secret)  # same cost as a wrong secret: no user enumeration by timing
            return None
        if self.remembered(name, secret) is not None:
            return credential
        digest = hashlib.sha256(secret.encode()).digest()
        try:
            self._hasher.verify(credential.secret_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        with self._lock:
            self._verified[name] = (digest, time.monotonic() + VERIFIED_TTL_S)
        return credential


def hash_secret(secret: str) -> str:
    return PasswordHasher().hash(secret)


def make_token(name: str, secret: str) -> str:
    """A bearer token carries the client's name and secret: `snapledger_<name>_<secret>`."""
    return f"{TOKEN_PREFIX}{name}_{secret}"


def parse_authorization(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            name, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (name, secret) if sep else None
    if scheme.lower() == "bearer" and value.startswith(TOKEN_PREFIX):
        name, sep, secret = value[len(TOKEN_PREFIX):].rpartition("_")
        return (name, secret) if sep and name else None
    return None


# The embedded default's first start -------------------------------------------------------

CREDENTIALS_FILE = "credentials.json"  # the client side: name and secret, mode 0600
USERS_FILE = "users.json"  # the server side: names, argon2 hashes, scopes


def ensure_admin(data_dir: Path) -> tuple[Path, bool]:
    """Create an admin credential in the data directory unless one exists.
    Returns the client credentials file and whether it was created now."""
    users, client = data_dir / USERS_FILE, data_dir / CREDENTIALS_FILE
    if users.exists():
        return client, False
    secret = secrets.token_hex(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(client, {"user": "admin", "secret": secret, "token": make_token("admin", secret)})
    _write_private(users, [{"name": "admin", "secret_hash": hash_secret(secret), "scopes": [ADMIN]}])
    return client, True


def _write_private(path: Path, data: JsonValue) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def load_credentials(configured: list[UserEntry], data_dir: Path) -> list[Credential]:
    entries = list(configured)
    users = data_dir / USERS_FILE
    if users.exists():
        entries += json.loads(users.read_text())
    return [Credential(name=e["name"], secret_hash=e["secret_hash"], scopes=bosh_scopes(e.get("scopes", [])))
            for e in entries]


def credential_store(config: Config) -> CredentialStore:
    """The API's credentials: the configured users, else the data directory's
    admin (created on the first start, its path logged for the CLI)."""
    if not config.users:
        path, created = ensure_admin(config.data_dir)
        log = structlog.get_logger("snapledger.auth")
        if created:
            log.warning("created an admin credential; the CLI reads it from there", credentials=str(path.resolve()))
        else:
            log.info("admin credential", credentials=str(path.resolve()))
    store = CredentialStore(load_credentials(config.users, config.data_dir))
    store.failures = FailureBudget(config.auth_failure_burst, config.auth_failure_rate_per_s)
    return store


# BOSH's scopes (issue 17) mean what they mean to the Director: bosh.admin is
# admin, bosh.read reads; bosh.teams.<team>.admin is kept as it is and grants
# admin of deployments tagged `team: <team>` (api/director.py).
BOSH_SCOPES = {"bosh.admin": ADMIN, "bosh.read": READ}


def bosh_scopes(scopes: Iterable[str]) -> frozenset[str]:
    return frozenset(BOSH_SCOPES.get(s, s) for s in scopes)


# Checking a request -------------------------------------------------------------------------

def route_key(request: web.Request) -> tuple[str, str] | None:
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    if resource is None:
        return None
    return (request.method if request.method != "HEAD" else "GET", resource.canonical)


AUTH = web.AppKey("auth", CredentialStore)
USER = web.RequestKey("user", str)  # the authenticated name: the actor of every event
CREDENTIAL = web.RequestKey("credential", Credential)  # who that is, for checks beyond the route's own


def may(request: web.Request, access: Access, method: str, deployment: str | None) -> bool:
    """Whether the caller may do `method` with `access` on `deployment`
    (with authentication switched off, everyone may do everything)."""
    credential: Credential | None = request.get(CREDENTIAL)
    if credential is None:
        return request.app.get(AUTH) is None
    return credential.allows(access, method, deployment)


def auth_middleware(route_access: Mapping[tuple[str, str], Access],
                    task_deployment: Callable[[web.Request, str], Awaitable[str | None]],
                    scoped_deployment: Callable[[web.Request], Awaitable[str | None]] | None = None) -> Middleware:
    """`route_access`: each (method, route)'s declared access; `task_deployment(request, task_id)`
    answers which deployment a task is of; `scoped_deployment(request)` the one deployment a
    SCOPED read is confined to (or None)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        key = route_key(request)
        if key is None:  # no route matched: let aiohttp answer 404/405
            return await handler(request)
        access = route_access.get(key)
        if access is None:
            return _error(403, f"route {key[0]} {key[1]} declares no access; refused", "undeclared_route")
        if access is Access.PUBLIC:
            return await handler(request)
        store = request.app.get(AUTH)
        if store is None:  # authentication switched off (auth.enabled: false)
            return await handler(request)
        header = request.headers.get("Authorization")
        parsed = parse_authorization(header) if header else None
        if parsed is None:
            return _unauthorized("credentials required (HTTP Basic or a bearer token)" if header is None
                                 else "malformed Authorization header")
        credential = store.remembered(*parsed)
        if credential is None:
            refused = _over_budget(request, store)
            if refused is not None:
                return refused
            credential = await verify_in_pool(request, store, *parsed)
        if credential is None:
            store.failures.failed(request.remote or "unknown")
            return _unauthorized("invalid credentials")
        deployment = request.match_info.get("deployment") or request.match_info.get("name")
        if access is Access.TASK:
            deployment = await task_deployment(request, request.match_info["task_id"])
        elif access is Access.SCOPED:
            deployment = await scoped_deployment(request) if scoped_deployment is not None else None
        if not credential.allows(access, request.method, deployment):
            needed = {Access.READ: READ, Access.ADMIN: ADMIN}.get(
                access, f"{ADMIN} or {deployment_admin(deployment or '<deployment>')}")
            if access is Access.SCOPED:
                needed = (f"{READ}, or {deployment_admin(deployment or '<deployment>')} for a read confined "
                          "to that deployment (deployment=NAME)")
            return _error(403, f"user '{credential.name}' lacks the scope for {key[0]} {key[1]}: needs {needed}",
                          "forbidden", scope=needed)
        request[USER] = credential.name
        request[CREDENTIAL] = credential
        return await handler(request)

    return middleware


def _over_budget(request: web.Request, store: CredentialStore) -> web.Response | None:
    """429 before any hashing when the source spent its failures or the pool is full."""
    import math

    source = request.remote or "unknown"
    wait = store.failures.retry_after(source)
    reason = "too many failed authentications from this address"
    if wait <= 0 and store.pending >= AUTH_MAX_PENDING:
        wait, reason = 1.0, "too many authentications waiting to be checked"
    if wait <= 0:
        return None
    retry_after = str(max(1, math.ceil(wait)))
    structlog.get_logger("snapledger.auth").warning("authentication refused", source=source, reason=reason,
                                                    retry_after_s=int(retry_after), path=request.path)
    response = _error(429, f"{reason}; retry in {retry_after} s", "too_many_requests")
    response.headers["Retry-After"] = retry_after
    return response


async def verify_in_pool(request: web.Request, store: CredentialStore, name: str, secret: str) -> Credential | None:
    import asyncio

    # argon2 takes ~0.1 s of CPU: off the event loop, in the store's own bounded pool.
    store.pending += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(store.executor, store.verify, name, secret)
    finally:
        store.pending -= 1


def _error(status: int, message: str, code: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, "code": code, **extra}, status=status)


def _unauthorized(message: str) -> web.Response:
    response = _error(401, message, "unauthorized")
    response.headers["WWW-Authenticate"] = 'Basic realm="snapledger"'
    return response
