"""HTTP load generator, run as its own process (so it does not share the
server's interpreter): keep-alive HTTP/1.1 over raw asyncio streams, which
costs a few microseconds per request, far less than the servers measured.

Closed loop (`--concurrency C`): C connections, each sends its next request
when the previous answer arrived. Open loop (`--rate R`): requests are due at
a steady R per second whatever the answers do; latency counts from when a
request was due (no coordinated omission), over up to `--concurrency`
connections. Prints one JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any


def build_request(method: str, path: str, authorization: str | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 0", "Connection: keep-alive"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


class Stats:
    def __init__(self, record: bool) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.record = record
        self.acks: list[tuple[float, str]] = []  # (wall time of the answer, task id)
        self.measuring = False

    def add(self, status: int, body: bytes, latency: float) -> None:
        if not self.measuring:
            return
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 300:
            self.errors += 1
            return
        self.latencies.append(latency)
        if self.record:
            self.acks.append((time.time(), json.loads(body)["task_id"]))


async def closed_loop(args: argparse.Namespace, request: bytes, stats: Stats, stop: asyncio.Event) -> None:
    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
        try:
            while not stop.is_set():
                started = time.perf_counter()
                status, body = await exchange(reader, writer, request)
                stats.add(status, body, time.perf_counter() - started)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(args.concurrency)))


async def open_loop(args: argparse.Namespace, request: bytes, stats: Stats, stop: asyncio.Event) -> None:
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(args.concurrency):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", args.port))
    interval = 1.0 / args.rate
    in_flight: set[asyncio.Task[None]] = set()

    async def send(due: float) -> None:
        conn = await idle.get()
        try:
            status, body = await exchange(conn[0], conn[1], request)
            stats.add(status, body, time.perf_counter() - due)
        finally:
            idle.put_nowait(conn)

    start = time.perf_counter()
    n = 0
    while not stop.is_set():
        due = start + n * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.get_running_loop().create_task(send(due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        n += 1
    if in_flight:
        await asyncio.wait(in_flight, timeout=30)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    request = build_request(args.method, args.path, args.authorization)
    stats = Stats(args.record)
    stop = asyncio.Event()
    runner = open_loop if args.rate else closed_loop
    job = asyncio.get_running_loop().create_task(runner(args, request, stats, stop))
    await asyncio.sleep(args.warmup)
    stats.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    stats.measuring = False
    elapsed = time.perf_counter() - started
    stop.set()
    await job
    ok = len(stats.latencies)
    lat = sorted(stats.latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] * 1000, 3) if lat else None

    return {"requests": ok, "errors": stats.errors, "statuses": stats.statuses, "duration_s": round(elapsed, 3),
            "throughput": round(ok / elapsed, 1), "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100),
            "acks": stats.acks}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--method", default="POST")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--authorization", default=None)
    args = parser.parse_args()
    json.dump(asyncio.run(main_async(args)), sys.stdout)


if __name__ == "__main__":
    main()
