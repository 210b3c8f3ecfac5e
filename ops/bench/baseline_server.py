"""The raw baseline for command acceptance: a bare aiohttp handler doing one
INSERT + COMMIT into a table shaped like the event store's, then 202.

Same rows per request as a ledger command writes (`--rows`, with payloads of
`--payload` bytes), same framework, no validation, no aggregates, no locks.
PostgreSQL through psycopg's async pool (8 connections, like the ledger's API
executor); SQLite through one connection in one thread (SQLite has one writer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

PG_DDL = """CREATE TABLE IF NOT EXISTS raw_events (
    originator_id uuid NOT NULL, originator_version bigint NOT NULL, topic text, state bytea,
    notification_id bigserial, PRIMARY KEY (originator_id, originator_version));
CREATE UNIQUE INDEX IF NOT EXISTS raw_events_notification_id ON raw_events (notification_id)"""
SQLITE_DDL = """CREATE TABLE IF NOT EXISTS raw_events (
    originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB,
    PRIMARY KEY (originator_id, originator_version))"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pg", default="")
    parser.add_argument("--sqlite", default="")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--payload", type=int, default=600)
    parser.add_argument("--reuse-port", action="store_true",
                        help="one of several processes on the port (SO_REUSEPORT), as `snapledger api --processes N`")
    args = parser.parse_args()
    payload = os.urandom(args.payload // 2).hex().encode()[: args.payload]
    app = web.Application()
    values = ", ".join(["(%s, 1, 'bench:Raw', %s)"] * args.rows)

    if args.pg:
        from psycopg_pool import AsyncConnectionPool

        import psycopg

        with psycopg.connect(args.pg, autocommit=True) as conn:
            for statement in PG_DDL.split(";"):
                conn.execute(statement)
        statement = f"INSERT INTO raw_events (originator_id, originator_version, topic, state) VALUES {values}"

        async def open_pool(app: web.Application) -> Any:
            pool = AsyncConnectionPool(args.pg, min_size=8, max_size=8, open=False)
            await pool.open(wait=True)
            app["pool"] = pool
            yield
            await pool.close()

        async def handle(request: web.Request) -> web.Response:
            params: list[Any] = []
            for _ in range(args.rows):
                params += [uuid.uuid4(), payload]
            async with request.app["pool"].connection() as conn:  # commits on exit
                await conn.execute(statement, params)
            return web.json_response({"task_id": str(params[0]), "state": "queued"}, status=202)

        app.cleanup_ctx.append(open_pool)
    else:
        conn = sqlite3.connect(args.sqlite, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SQLITE_DDL)
        executor = ThreadPoolExecutor(max_workers=1)
        statement = "INSERT INTO raw_events (originator_id, originator_version, topic, state) VALUES " + \
            ", ".join(["(?, 1, 'bench:Raw', ?)"] * args.rows)

        def insert() -> str:
            params: list[Any] = []
            for _ in range(args.rows):
                params += [str(uuid.uuid4()), payload]
            conn.execute("BEGIN")
            conn.execute(statement, params)
            conn.execute("COMMIT")
            return str(params[0])

        async def handle(request: web.Request) -> web.Response:
            task_id = await asyncio.get_running_loop().run_in_executor(executor, insert)
            return web.json_response({"task_id": task_id, "state": "queued"}, status=202)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/insert", handle)
    app.router.add_get("/health", health)
    if not args.reuse_port:
        web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
        return
    # Bound and listening before the app starts, as each of the ledger's API processes is;
    # "ready" once the app has started (the benchmark starts the next process then).
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)

    async def announce(app: web.Application) -> None:
        print("ready", flush=True)

    app.on_startup.append(announce)
    web.run_app(app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
