"""What wrong credentials cost a valid client (issue 16, item 5).

Starts a real `snapledger serve` (SQLite), measures a valid client's GET /info
latency alone (the baseline, same run), then again while FLOODERS clients
send wrong secrets as fast as they are answered, and prints both with the
answers the flooders got. Standalone:

    .venv/bin/python ops/bench/auth_flood.py [--flooders 12] [--seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

SNAPLEDGER = str(Path(sys.executable).parent / "snapledger")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, authorization: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code


def _valid_latencies(url: str, authorization: str, seconds: float) -> list[float]:
    latencies, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        assert _get(url, authorization) == 200
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    return latencies


def _figures(name: str, latencies: list[float]) -> str:
    if len(latencies) < 2:  # a valid request took longer than the whole measurement
        return f"{name:<28} n={len(latencies):>5}  " + ", ".join(f"{v:.0f} ms" for v in latencies)
    q = statistics.quantiles(latencies, n=100)
    return f"{name:<28} n={len(latencies):>5}  p50={q[49]:8.1f} ms  p99={q[98]:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flooders", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp) / "data", _port()
        proc = subprocess.Popen([SNAPLEDGER, "serve", "--data-dir", str(data_dir), "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}/info"
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            creds = json.loads((data_dir / "credentials.json").read_text())
            valid = "Basic " + base64.b64encode(f"{creds['user']}:{creds['secret']}".encode()).decode()
            _get(url, valid)  # verified once, as a busy client is
            alone = _valid_latencies(url, valid, args.seconds)

            stop, answers = threading.Event(), Counter()

            def flood(i: int) -> None:
                wrong = "Basic " + base64.b64encode(f"admin:wrong-{i}".encode()).decode()
                while not stop.is_set():
                    answers[_get(url, wrong)] += 1

            threads = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(args.flooders)]
            for t in threads:
                t.start()
            time.sleep(1)
            flooded = _valid_latencies(url, valid, args.seconds)
            stop.set()
            for t in threads:
                t.join(35)
            print(_figures("valid client, alone", alone))
            print(_figures(f"valid client, {args.flooders} flooders", flooded))
            print(f"{'flooders were answered':<28} " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
                  + f"  ({sum(answers.values()) / (args.seconds + 1):.1f}/s)")
            print(f"{'ratio p50 flooded/alone':<28} {statistics.median(flooded) / statistics.median(alone):.1f}x")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


if __name__ == "__main__":
    main()
