"""The event store and the view database, for PostgreSQL and SQLite, from one URL.

`eventsourcing` has no DSN setting, so the URL is turned into its POSTGRES_* /
SQLITE_* settings here. The views live in the same database as the events
(PostgreSQL: same schema; SQLite: same file) so a view batch and its tracking
position commit together.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from weakref import WeakKeyDictionary

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from snapledger.projections.database import Row

EVENTS_CHANNEL = "ledger_events"  # the library NOTIFYs on its events table name


@dataclass(frozen=True)
class StoreUrl:
    kind: str  # "sqlite" | "postgres"
    sqlite_path: Path | None = None
    dbname: str = ""
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    schema: str = "public"
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:{self.sqlite_path}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}?schema={self.schema}"

    def conninfo(self) -> str:
        params = {"dbname": self.dbname, "host": self.host, "port": str(self.port), "user": self.user,
                  "password": self.password, **dict(self.options)}
        params["options"] = f"-c search_path={self.schema}"
        return psycopg.conninfo.make_conninfo(**params)


def parse_store_url(url: str) -> StoreUrl:
    """`sqlite:///abs/path.sqlite`, `sqlite:rel/path.sqlite` or
    `postgresql://user:pw@host:port/db?schema=name&sslmode=require`."""
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        path = rest[2:] if rest.startswith("//") else rest
        return StoreUrl(kind="sqlite", sqlite_path=Path(path))
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"unsupported database URL scheme {parts.scheme!r}")
    query = dict(parse_qsl(parts.query))
    schema = query.pop("schema", "public")
    if not schema.replace("_", "").isalnum():
        raise ValueError(f"invalid schema name {schema!r}")
    return StoreUrl(
        kind="postgres", dbname=unquote(parts.path.lstrip("/")) or "postgres",
        host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
        user=unquote(parts.username or "postgres"), password=unquote(parts.password or ""),
        schema=schema, options=tuple(sorted(query.items())),
    )


def private_sqlite_files(path: Path) -> None:
    """The ledger holds drain output, task results and who did what: the service
    user's only. Created 0600 before SQLite opens it (its -wal and -shm files
    take the database's mode), and an existing database made so."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for side in ("", "-wal", "-shm", "-journal"):
        with suppress(FileNotFoundError):
            os.chmod(f"{path}{side}", 0o600)


def ledger_env(url: StoreUrl, pool_size: int = 4, max_overflow: int = 8) -> dict[str, str]:
    """The `eventsourcing` settings for the Ledger application."""
    if url.kind == "sqlite":
        assert url.sqlite_path is not None
        url.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite_files(url.sqlite_path)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(url.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "10"}
    ensure_schema(url)
    return {
        # The library's factory, plus the URL's libpq options (sslmode, ...) on its pool.
        "PERSISTENCE_MODULE": "snapledger.adapters.pg_recorder:LedgerFactory",
        "SNAPLEDGER_LIBPQ_OPTIONS": json.dumps(dict(url.options)),
        # Large saves outside pipeline mode (a psycopg hang): adapters/pg_recorder.py.
        "APPLICATION_RECORDER_TOPIC": "snapledger.adapters.pg_recorder:LedgerRecorder",
        "POSTGRES_DBNAME": url.dbname, "POSTGRES_HOST": url.host, "POSTGRES_PORT": str(url.port),
        "POSTGRES_USER": url.user, "POSTGRES_PASSWORD": url.password, "POSTGRES_SCHEMA": url.schema,
        "POSTGRES_POOL_SIZE": str(pool_size), "POSTGRES_MAX_OVERFLOW": str(max_overflow),
        # The pool-wait timeout is retried 10x by the library: keep it short so
        # an outage fails in seconds, not minutes.
        "POSTGRES_CONNECT_TIMEOUT": "2",
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_LOCK_TIMEOUT": "10",
    }


# psycopg_pool retries a lost server with doubling delays for `reconnect_timeout`
# (default 5 min), so after a 40 s outage the next attempt can be 30 s away.
# Giving up early is harmless: the next request that finds no connection starts
# a fresh attempt at once. So recovery follows the database within seconds.
RECONNECT_TIMEOUT_S = 5.0


# Pre-ping costs a round trip per borrowed connection: a command borrowed
# three and paid six round trips (docs/performance.md). A connection that
# passed a ping within this window is handed out as is; if the server went
# away meanwhile, the query fails, the pool drops the broken connection and
# the library retries on a fresh (pinged) one.
PING_QUIET_S = 1.0


class QuietPing:
    """A pool's `check`: ping a connection only if it was not pinged within PING_QUIET_S.

    When each connection was last pinged is kept here (weakly), not on the
    library's connection objects."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pinged: WeakKeyDictionary[Any, float] = WeakKeyDictionary()
        self._guard = threading.Lock()

    def __call__(self, conn: Any) -> None:
        now = self.clock()
        with self._guard:
            if now - self._pinged.get(conn, -PING_QUIET_S) < PING_QUIET_S:
                return
        ConnectionPool.check_connection(conn)
        with self._guard:
            self._pinged[conn] = now


SQLITE_EVENTS_TABLE = "stored_events"  # the library's table names, by store
POSTGRES_EVENTS_TABLE = EVENTS_CHANNEL


def store_exists(url: StoreUrl) -> bool:
    """Whether an event store was ever created at `url`. Creates nothing (no file,
    no schema): a tool that only reads a store must not leave an empty one behind."""
    if url.kind == "sqlite":
        assert url.sqlite_path is not None
        if not url.sqlite_path.is_file():
            return False
        lite = sqlite3.connect(f"file:{url.sqlite_path.resolve()}?mode=ro", uri=True)
        try:
            return lite.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (SQLITE_EVENTS_TABLE,)).fetchone() is not None
        finally:
            lite.close()
    with psycopg.connect(url.conninfo(), connect_timeout=5) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                           (f'"{url.schema}".{POSTGRES_EVENTS_TABLE}',)).fetchone()
        return bool(row and row[0])


def ensure_schema(url: StoreUrl) -> None:
    # The library creates tables but never the schema itself.
    if url.schema == "public":
        return
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(url.schema)))


@contextmanager
def setup_lock(url: StoreUrl) -> Iterator[None]:
    """Serialise schema creation across processes starting together: concurrent
    CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's catalog."""
    if url.kind != "postgres":
        yield
        return
    ensure_schema(url)
    with psycopg.connect(url.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))


SETUP_LOCK_KEY = 0x736E61706C6564  # "snapled"


class Database:
    """A small DB-API facade for the views: `%s` placeholders on both backends."""

    dialect: str

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def query(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        raise NotImplementedError

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """A read-only cursor on one consistent state of the database (several
        reads see the same moment; writers are not blocked)."""
        raise NotImplementedError
        yield

    def close(self) -> None:
        pass


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: StoreUrl, min_size: int = 1, max_size: int = 8) -> None:
        self.url = url
        # Autocommit: a read is one round trip (no BEGIN before it, no ROLLBACK
        # after it: the listing spent two of its three round trips so);
        # `transaction()` and `snapshot()` still open a real transaction.
        self.pool = ConnectionPool(
            url.conninfo(), min_size=min_size, max_size=max_size, timeout=3,
            kwargs={"row_factory": dict_row, "autocommit": True}, check=QuietPing(),
            open=True, name="views", reconnect_timeout=RECONNECT_TIMEOUT_S,
        )

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            with conn.cursor() as cur:
                yield cur

    def query(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        with self.pool.connection() as conn:
            rows: list[Row] = conn.execute(statement, params).fetchall()
            return rows

    def close(self) -> None:
        self.pool.close()


class SqliteCursor:
    """Adapts `%s` placeholders and dict rows onto sqlite3."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, statement: str, params: Sequence[object] = ()) -> SqliteCursor:
        self._cursor.execute(statement.replace("%s", "?"), tuple(params))
        return self

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(statement.replace("%s", "?"), rows)

    def fetchall(self) -> list[Row]:
        names = [d[0] for d in self._cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]

    def fetchone(self) -> Row | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
            with self._guard:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front: no deadlock on lock upgrade.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield SqliteCursor(conn.cursor())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        conn = self._conn()
        conn.execute("BEGIN")  # deferred: a WAL read snapshot from the first read, no write lock
        try:
            yield SqliteCursor(conn.cursor())
        finally:
            conn.execute("ROLLBACK")

    def query(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        return SqliteCursor(self._conn().cursor()).execute(statement, params).fetchall()

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()


def open_database(url: StoreUrl) -> Database:
    if url.kind == "sqlite":
        assert url.sqlite_path is not None
        return SqliteDatabase(url.sqlite_path)
    return PostgresDatabase(url)
