#!/usr/bin/env python3
"""Chaos run: API, two workers and the projector as separate processes on
PostgreSQL; a client drives commands (snapshots, deletions, job updates whose
drain and stop scripts really run through the local agent) while a killer
SIGKILLs random processes and restarts them. Then, at quiescence, the ledger
is checked against the client's record and against the local CPI's files on
disk:

1. every acknowledged command is in the log and its task is terminal;
2. no snapshot directory without a ledger entry, no ledger entry without its
   directory (unless recorded failed or in doubt), one directory per snapshot;
3. no task left `processing`;
4. the views equal a rebuild from position 0 (nothing skipped or doubled);
5. job updates: no instance left waiting, draining, stopping or snapshotting
   (and no claim held); a failed instance failed for a reason kills explain
   (`Snapledger::WorkerLost`, or cancelled after another's failure); every
   `ready` instance has its clean snapshot (trigger `job_update`, clean) of
   each disk taken exactly once; no clean snapshot of an instance whose drain
   and stop did not complete;
6. no leaked copies: no local-CPI copy the ledger does not list (or hold in
   doubt), no `.tmp-` half copy left, no process of a CPI call left running.

Besides the random SIGKILLs, two faults of issue 16 are staged on purpose:
- the double kill: a worker dies right after a CPI call returned, and the
  worker that recovers the call dies right after it recorded
  `CpiCallInDoubt` (SNAPLEDGER_CRASH_AT, os._exit: no clean-up); the next
  run must resolve it (`--double-kills` rounds);
- a hung CPI: deployment `dh` is on an external CPI whose `snapshot_disk`
  hangs (and starts a setsid() helper) until its time-out; snapshots of the
  other deployments must go on meanwhile (`local_tasks_done_during_hung_calls`).

On PostgreSQL the API, two workers and the projector are separate processes;
on SQLite one `serve` process (as most single-host installs run it).

    python ops/chaos.py                       # `make chaos`: 1,000 commands, 30 kills, SQLite and PostgreSQL
    python ops/chaos.py --backend sqlite --commands 300 --kills 10

Prints its figures; exits non-zero when a check fails. The short CI run is
tests/faults/test_chaos.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool

SNAPLEDGER = str(Path(sys.executable).parent / "snapledger")
ROLES = ("api", "worker", "worker", "projector")  # PostgreSQL
SQLITE_ROLES = ("serve",)
API_ROLES = ("api", "serve")
WORKER_ROLES = ("worker", "serve")
CRASHED = 86  # the exit code of a SNAPLEDGER_CRASH_AT death
TERMINAL = ("done", "error")
# Why a job-update instance may fail in a chaos run: its worker was killed during
# the drain or stop, or an instance before it failed. Anything else is a bug.
EXPLAINED_FAILURES = ("Snapledger::WorkerLost", "Cancelled")
# A drain that takes a moment (0-0.4 s), so some kills land in the middle of one;
# a stop that does a little work too.
DRAIN_SCRIPT = "#!/bin/bash\nsleep 0.$((RANDOM % 5))\necho 0\n"
STOP_SCRIPT = "#!/bin/bash\nsleep 0.05\n"
# The hung CPI: `info` answers, everything else hangs past the time-out (3 s),
# after starting a helper in a session of its own that would outlive the call
# if nothing reaped it. Each helper's pid goes to the pids dir.
HUNG_CPI = """#!/bin/sh
request=$(cat)
case "$request" in *'"method": "info"'*) echo '{"result": {"api_version": 2}, "error": null, "log": ""}'; exit 0 ;; esac
setsid sh -c 'echo $$ > {pids}/helper-$$; exec sleep 60' </dev/null >/dev/null 2>&1 &
sleep 8
"""
HUNG_TIMEOUT_S = 3
START_TRIES = 10  # starts of a killed API before the run gives up
STARTED: set[Process] = set()  # stopped at the end of a backend's run, also when it failed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    def __init__(self, role: str, data_dir: Path, database: str, port: int, env: dict[str, str]) -> None:
        self.role, self.data_dir, self.database, self.port, self.env = role, data_dir, database, port, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{role}-{port}.log"
        self.kills = 0

    def start(self, crash_at: str | None = None) -> None:
        STARTED.add(self)
        args = [SNAPLEDGER, self.role, "--data-dir", str(self.data_dir), "--database", self.database,
                "--port", str(self.port)]
        if self.role in API_ROLES:
            args.append("--plain-http")  # the load is about crashes, not TLS (tests/e2e/test_tls.py)
        env = {**self.env, "SNAPLEDGER_CRASH_AT": crash_at} if crash_at else self.env
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
                                     start_new_session=True)

    def crashed(self, timeout: float) -> bool:
        """Whether it died at its crash point within `timeout` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout) == CRASHED
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class ExitedAtStart(RuntimeError):
    """The API process exited before it served."""


class Client:
    def __init__(self, url: str, credentials: Path) -> None:
        self.url = url
        self.credentials = credentials
        self.authorization = ""

    def _auth(self) -> str:
        if not self.authorization and self.credentials.exists():
            import base64

            data = json.loads(self.credentials.read_text())
            self.authorization = "Basic " + base64.b64encode(f"{data['user']}:{data['secret']}".encode()).decode()
        return self.authorization

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Authorization": self._auth()})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")
        except (OSError, ValueError):
            return 0, None  # the API is down (killed) or the answer was cut: not acknowledged

    def wait_up(self, timeout: float = 30, alive: Process | None = None) -> None:
        """`alive`: the API's process; its exit ends the wait at once (ExitedAtStart)."""
        deadline = time.monotonic() + timeout
        while self.call("GET", "/health", timeout=2)[0] != 200:
            if alive is not None and alive.proc is not None and alive.proc.poll() is not None:
                raise ExitedAtStart(f"exit code {alive.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not come up")
            time.sleep(0.05)


def run_chaos(workdir: Path, database: str, **options: Any) -> dict[str, Any]:
    """One chaos run (options: see `_run_chaos`); every process it started is
    stopped at the end, also when the run fails (a test's failure included)."""
    try:
        return _run_chaos(workdir, database, **options)
    finally:
        for p in list(STARTED):
            p.stop()
        STARTED.clear()


def _run_chaos(workdir: Path, database: str, commands: int = 1000, kills: int = 20, seed: int | None = None,
              deployments: int = 3, instances: int = 3, concurrency: int = 4,
              quiesce_timeout: float = 180, progress: Any = print, double_kills: int = 2,
              hung_cpi: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    data_dir = workdir / "data"
    disks = [(f"d{d}", i, f"disk-{d}-{i}") for d in range(deployments) for i in range(instances)]
    for _, _, cid in disks:
        (data_dir / "disks" / cid).mkdir(parents=True, exist_ok=True)
        (data_dir / "disks" / cid / "payload").write_bytes(os.urandom(2048))
    for name, text in (("drain", DRAIN_SCRIPT), ("stop", STOP_SCRIPT)):  # the workers' default jobs_dir
        script = data_dir / "jobs" / "db" / "bin" / name
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        script.chmod(0o755)
    pids_dir = workdir / "hung-cpi-helpers"
    pids_dir.mkdir()
    hung = workdir / "hung-cpi"
    hung.write_text(HUNG_CPI.replace("{pids}", str(pids_dir)))
    hung.chmod(0o755)
    config = workdir / "snapledger.yml"
    config.write_text(json.dumps({"default_cpi": "local", "cpis": {
        "local": {"type": "local"},
        "hung": {"type": "external", "executable": str(hung), "timeout": HUNG_TIMEOUT_S}}}))
    env = {**os.environ, "SNAPLEDGER_LOG_FORMAT": "json", "SNAPLEDGER_POLL_INTERVAL": "0.2",
           "SNAPLEDGER_WORKER_LEASE": "1", "SNAPLEDGER_CONFIG": str(config)}
    env.pop("SNAPLEDGER_CRASH_AT", None)
    roles = SQLITE_ROLES if database.startswith("sqlite") else ROLES
    api_port = free_port()
    procs = [Process(role, data_dir, database, api_port if role in API_ROLES else free_port(), env)
             for role in roles]
    client = Client(f"http://127.0.0.1:{api_port}", data_dir / "credentials.json")
    for p in procs:
        start_process(p, client, progress)
    for d in range(deployments):
        body: dict[str, Any] = {"instances": [{"job": "db", "index": i, "disks": [f"disk-{d}-{i}"]}
                                              for i in range(instances)]}
        assert client.call("PUT", f"/deployments/d{d}", body)[0] == 200
    if hung_cpi:
        body = {"cpi": "hung", "instances": [{"job": "db", "index": 0, "disks": ["vol-hung"]}]}
        assert client.call("PUT", "/deployments/dh", body)[0] == 200
    assert client.call("PUT", "/config/snapshots", {"enable_snapshots": True})[0] == 200

    acknowledged: list[dict[str, Any]] = []
    sent = 0
    lock = threading.Lock()
    done = threading.Event()
    double_kill_rounds: list[str] = []
    harness_errors: list[str] = []

    def one_command(n: int) -> None:
        nonlocal sent
        dep = f"d{rng.randrange(deployments)}"
        roll = rng.random()
        body: Any = None
        if hung_cpi and roll < 0.04:
            method, path = "POST", "/deployments/dh/snapshots"  # hangs until its time-out
        elif roll < 0.40:
            method, path = "POST", f"/deployments/{dep}/snapshots"
        elif roll < 0.65:
            method, path = "POST", f"/deployments/{dep}/jobs/db/{rng.randrange(instances)}/snapshots"
        elif roll < 0.78:
            # A job update, as a deploy tool announces it: the whole job or one instance.
            which = rng.choice(["", f"/{rng.randrange(instances)}"])
            method, path = "POST", f"/deployments/{dep}/jobs/db{which}/updates"
            body = {"drain_type": rng.choice(["update", "shutdown"]), "next_state": {"persistent_disk": 2048},
                    "max_in_flight": rng.randint(1, 2)}
        elif roll < 0.95:
            status, listing = client.call("GET", f"/deployments/{dep}/snapshots")
            taken = [r["snapshot_cid"] for r in listing or [] if r["state"] == "taken"] if status == 200 else []
            if not taken:
                method, path = "POST", f"/deployments/{dep}/snapshots"
            else:
                method, path = "DELETE", f"/deployments/{dep}/snapshots/{rng.choice(taken)}"
        else:
            method, path = "DELETE", f"/deployments/{dep}/snapshots"
        status, answer = client.call(method, path, body)
        for _ in range(60):  # the API is being restarted: send it once it is back
            if status != 0 or done.is_set():
                break
            time.sleep(0.5)
            status, answer = client.call(method, path, body)
        with lock:
            sent += 1
            if status == 202:
                acknowledged.append({"task_id": answer["task_id"], "command": f"{method} {path}"})
            if sent % 100 == 0:
                progress(f"  {sent}/{commands} commands sent, {len(acknowledged)} acknowledged, "
                         f"{sum(p.kills for p in procs)} kills")

    def restart(p: Process, crash_at: str | None = None) -> None:
        start_process(p, client, progress, crash_at)

    def double_kill() -> str:
        """Issue 16 item 1: the worker of a call dies after the CPI answered, and the
        worker recovering the call dies right after it recorded it in doubt."""
        workers = [p for p in procs if p.role in WORKER_ROLES]
        first, second = workers[0], workers[-1]  # the same `serve` on SQLite
        for p in workers:
            p.kill()
        first.start("cpi_returned")
        with contextlib.suppress(RuntimeError):  # it died already, on earlier work: that is the first kill
            client.wait_up(alive=first)
        # Work for it, whatever the clients are doing: a snapshot of every disk of d0.
        status, answer = client.call("POST", "/deployments/d0/snapshots")
        if status == 202:
            with lock:
                acknowledged.append({"task_id": answer["task_id"], "command": "POST /deployments/d0/snapshots"})
        if not first.crashed(30):
            first.kill()
            outcome = "no call returned"
        else:
            second.start("in_doubt_marked")
            outcome = "done" if second.crashed(30) else "nothing found in doubt"
            second.kill()
        for p in workers:
            if p.proc is None or p.proc.poll() is not None:
                restart(p)
        return outcome

    def killer() -> None:
        try:
            kill_at_random()
        except Exception as error:  # the run's figures would silently miss kills: a problem of the run
            harness_errors.append(f"the killer stopped: {error!r}")

    def kill_at_random() -> None:
        # Spread the kills over the command phase, at random moments; the double kills among them.
        rounds_at = {(r + 1) * kills // (double_kills + 1) for r in range(double_kills)}
        for k in range(kills):
            if done.wait(rng.uniform(0.05, 2 * expected_duration / max(kills, 1))):
                break
            if k in rounds_at:
                double_kill_rounds.append(double_kill())
            victim = rng.choice(procs)
            victim.kill()
            time.sleep(rng.uniform(0, 0.3))
            restart(victim)

    expected_duration = max(commands / 25, 5.0)
    started = time.monotonic()
    killer_thread = threading.Thread(target=killer, daemon=True)
    killer_thread.start()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for n in range(commands):
            pool.submit(one_command, n)
    # Keep killing until the requested number of kills happened.
    while killer_thread.is_alive() and sum(p.kills for p in procs) < kills:
        time.sleep(0.1)
    done.set()
    killer_thread.join()
    for p in procs:
        if p.proc is None or p.proc.poll() is not None:
            restart(p)
    client.wait_up()
    command_phase = time.monotonic() - started

    progress(f"  waiting for quiescence of {len(acknowledged)} acknowledged tasks")
    deadline = time.monotonic() + quiesce_timeout
    states: dict[str, str] = {}
    pending = [a["task_id"] for a in acknowledged]
    while pending and time.monotonic() < deadline:
        still = []
        for task_id in pending:
            status, task = client.call("GET", f"/tasks/{task_id}")
            if status == 200 and task["state"] in TERMINAL:
                states[task_id] = task["state"]
            else:
                still.append(task_id)
        pending = still
        if pending:
            time.sleep(0.5)
    # Quiescent: the API and the workers have nothing left to do; stopped, their database
    # connections are free for the check's own (the projector keeps the views current).
    for p in procs:
        if p.role in ("api", "worker"):
            p.stop()
    report: dict[str, Any] = patiently(
        lambda: check(database, data_dir, acknowledged, states, pending, workdir), progress)
    report["leaked_cpi_processes"] = leaked_helpers(pids_dir)
    report["leaked_copies"] += report["leaked_cpi_processes"]
    if report["leaked_cpi_processes"]:
        report["problems"].append(f"{report['leaked_cpi_processes']} processes of CPI calls outlived them")
    report.update(commands_sent=sent, acknowledged=len(acknowledged), kills=sum(p.kills for p in procs),
                  kills_by_role={r: sum(p.kills for p in procs if p.role == r) for r in set(roles)},
                  double_kill_rounds=double_kill_rounds, command_phase_s=round(command_phase, 1))
    report["problems"].extend(harness_errors)
    if double_kills and "done" not in double_kill_rounds:
        report["problems"].append(f"no double kill was staged: {double_kill_rounds}")
    for p in procs:
        p.stop()
    return report


def patiently(step: Any, progress: Any, tries: int = 20) -> Any:
    """`step()`, again while PostgreSQL has no connection slot for it (a server shared
    with other runs): the check reads the ledger as it is, so repeating it is harmless."""
    for attempt in range(tries):
        try:
            return step()
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            if attempt == tries - 1:
                raise
            progress(f"  the database is busy ({type(error).__name__}); checking again")
            time.sleep(3)


def drop_schema(server: str, schema: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def start_process(p: Process, client: Client, progress: Any, crash_at: str | None = None) -> None:
    """Start one process; an API is waited for, and started again when it exits at start."""
    p.start(crash_at)
    if p.role not in API_ROLES or crash_at is not None:
        return
    for _ in range(START_TRIES):
        try:
            client.wait_up(alive=p)
            return
        except ExitedAtStart as exited:
            # It refused to start, e.g. the shared PostgreSQL had no connection slot
            # left: as systemd would, start it again (the kill count is unchanged).
            progress(f"  {p.role} exited at start ({exited}); starting it again")
            time.sleep(1)
            p.start()
    raise RuntimeError(f"{p.role} did not start in {START_TRIES} tries: see {p.log}")


def leaked_helpers(pids_dir: Path, grace_s: float = 15) -> int:
    """Helpers the hung CPI started (setsid) still running. A CPI whose worker was
    SIGKILLed is cleaned up when it exits (<= 8 s later): hence the grace."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = []
        for f in pids_dir.iterdir():
            try:
                pid = int(f.read_text())
                os.kill(pid, 0)
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, ValueError, IndexError):
                continue
            if state != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            for pid in alive:  # ours: leave nothing behind either way
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            return len(alive)
        time.sleep(0.5)


class Sql:
    """Rows as tuples from either backend, through snapledger's own database access."""

    def __init__(self, database: str) -> None:
        from snapledger.adapters.store import open_database, parse_store_url

        self.url = parse_store_url(database)
        self.db = open_database(self.url)
        self.events_table = "stored_events" if self.url.kind == "sqlite" else "ledger_events"

    def rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row.values()) for row in self.db.query(statement, params)]

    def close(self) -> None:
        self.db.close()


def check(database: str, data_dir: Path, acknowledged: list[dict[str, Any]], states: dict[str, str],
          pending: list[str], workdir: Path) -> dict[str, Any]:
    problems: list[str] = []
    sql = Sql(database)
    try:
        topics = [r[0] for r in sql.rows(f"SELECT topic FROM {sql.events_table}")]

        def count(suffix: str) -> int:
            return sum(1 for t in topics if t.endswith(suffix))

        queued = {r[0] for r in sql.rows("SELECT task_id FROM tasks_view")}
        # 1. every acknowledged command is in the log (its task was queued) and terminal.
        lost = [a for a in acknowledged if a["task_id"] not in queued]
        if lost:
            problems.append(f"{len(lost)} acknowledged commands not in the ledger: {lost[:3]}")
        if pending:
            detail = {t: [r[0] for r in sql.rows(
                "SELECT type FROM task_events_view WHERE task_id = %s ORDER BY position", (t,))]
                for t in pending[:3]}
            stuck_ops = sql.rows("SELECT operation_id, state, worker, updated_at FROM in_flight_ops")
            problems.append(f"{len(pending)} acknowledged tasks not terminal: {detail}; in flight: {stuck_ops[:5]}")
        # 3. no task processing at all, acknowledged or not.
        processing = sql.rows("SELECT count(*) FROM tasks_view WHERE state IN ('queued', 'processing')")[0][0]
        if processing:
            problems.append(f"{processing} tasks left queued/processing")
        # 2. and 6. ledger vs the local CPI's files.
        rows = sql.rows("SELECT snapshot_id, snapshot_cid, state, deployment FROM snapshots_view")
        local = [(sid, cid, state) for sid, cid, state, dep in rows if dep != "dh"]
        existing = {cid for _, cid, state in local if state in ("taken", "delete_requested", "deleting")}
        in_doubt = [sid for sid, _, state in local if state == "in_doubt"]
        entries = list((data_dir / "snapshots").iterdir())
        on_disk = {p.name for p in entries if not p.name.startswith(".")}
        half_copies = sorted(p.name for p in entries if p.name.startswith(".tmp-"))
        orphans = on_disk - existing - {f"snap-{sid}" for sid in in_doubt}
        missing = existing - on_disk
        if orphans:
            problems.append(f"{len(orphans)} snapshot directories without a ledger entry: {sorted(orphans)[:3]}")
        if half_copies:
            problems.append(f"{len(half_copies)} temporary directories left: {half_copies[:3]}")
        if missing:
            problems.append(f"{len(missing)} ledger snapshots without their directory: {sorted(missing)[:3]}")
        doubled = [sid for sid, cid, _ in local if cid and cid != f"snap-{sid}"]
        if doubled:
            problems.append(f"{len(doubled)} snapshots whose CID is not their operation's: {doubled[:3]}")
        calls = count("Snapshot.CpiCallStarted")
        report = {
            "events": len(topics), "tasks": len(queued), "tasks_done": sum(1 for s in states.values() if s == "done"),
            "tasks_error": sum(1 for s in states.values() if s == "error"),
            "snapshots_existing": len(existing), "snapshot_dirs": len(on_disk),
            "cpi_calls_recorded": calls, "in_doubt_found": count("Snapshot.CpiCallInDoubt"),
            "in_doubt_retried": count("Snapshot.InDoubtRetried"),
            "in_doubt_left_for_operator": count("Snapshot.InDoubtLeft"), "in_doubt_open_local": len(in_doubt),
            "lost": len(lost), "doubled": len(orphans) + len(doubled), "stuck": len(pending) + processing,
            "leaked_copies": len(orphans) + len(half_copies),
        }
        report.update(hung_cpi_figures(sql))
        # 5. job updates.
        job_updates = check_job_updates(sql)
        problems.extend(job_updates.pop("problems"))
        report.update(job_updates)
    finally:
        sql.close()
    # 4. the views equal a rebuild from position 0.
    report["view_differences"] = verify_views(database, workdir)
    if report["view_differences"]:
        problems.append(f"views differ from a rebuild: {report['view_differences'][:3]}")
    report["problems"] = problems
    return report


def hung_cpi_figures(sql: Sql) -> dict[str, Any]:
    """How the hung CPI's calls ended, and how many snapshot tasks of the other
    deployments finished while one of them hung (issue 16 item 2: none waits)."""
    calls: dict[str, list[str]] = {}
    outcomes: dict[str, int] = {}
    for aggregate, kind, at, data in sql.rows(
            "SELECT aggregate_id, type, time, data FROM audit_events WHERE deployment = 'dh' AND type IN "
            "('Snapshot.CpiCallStarted', 'Snapshot.Failed', 'Snapshot.CpiCallInDoubt') ORDER BY position"):
        if kind == "Snapshot.CpiCallStarted":
            calls[aggregate] = [at]
        elif aggregate in calls and len(calls[aggregate]) == 1:
            calls[aggregate].append(at)
            error = json.loads(data).get("error") or {}
            what = error.get("type") or kind
            outcomes[what] = outcomes.get(what, 0) + 1
    intervals = [tuple(v) for v in calls.values() if len(v) == 2]
    finished = [r[0] for r in sql.rows(
        "SELECT time FROM audit_events WHERE type = 'Task.Finished' AND deployment IS NOT NULL "
        "AND deployment <> 'dh'")]
    during = sum(1 for at in finished if any(start < at < end for start, end in intervals))
    return {"hung_cpi_calls": len(calls), "hung_cpi_outcomes": outcomes,
            "local_tasks_done_during_hung_calls": during}


def check_job_updates(sql: Sql) -> dict[str, Any]:
    """Every job-update instance ended, for a reason kills explain; clean snapshots
    exactly for the instances whose drain and stop completed, taken once each."""
    problems: list[str] = []
    instances = sql.rows("SELECT task_id, instance_id, job, idx, state, error FROM job_update_instances_view"
                             )
    unfinished = [(t, f"{job}/{idx}", state) for t, _, job, idx, state, _ in instances
                  if state not in ("ready", "failed", "cancelled")]
    if unfinished:
        problems.append(f"{len(unfinished)} job-update instances not ended: {unfinished[:3]}")
    claims = sql.rows("SELECT task_id, instance, state, worker FROM job_update_claims")
    if claims:
        problems.append(f"{len(claims)} job-update instances still held by a worker: {claims[:3]}")
    reasons: dict[str, int] = {}
    for task_id, _, job, idx, state, error in instances:
        if state in ("failed", "cancelled"):
            kind = "Cancelled" if state == "cancelled" else next(
                (r for r in EXPLAINED_FAILURES if (error or "").startswith(r + ":")), (error or "").split(": ")[0])
            reasons[kind] = reasons.get(kind, 0) + 1
            if kind not in EXPLAINED_FAILURES or not error:
                problems.append(f"job update {task_id}: {job}/{idx} {state} for no reason kills explain: {error}")
    tasks = sql.rows("SELECT t.task_id, t.state, t.result FROM tasks_view t WHERE t.kind = 'update_job'"
                         )
    for task_id, state, result in tasks:
        if state == "error" and not result:
            problems.append(f"job update {task_id} failed without a reason")

    # Which instances completed their drain and stop, and the disks each was announced with.
    stopped: set[tuple[str, str]] = set()
    disks: dict[tuple[str, str], list[str]] = {}
    for task_id, kind, data in sql.rows(
            "SELECT task_id, type, data FROM task_events_view WHERE type IN "
            "('JobUpdate.Announced', 'JobUpdate.JobStopped')"):
        data = json.loads(data)
        if kind == "JobUpdate.JobStopped":
            stopped.add((task_id, data["instance_id"]))
        else:
            disks.update({(task_id, i["id"]): list(i["disks"]) for i in data["instances"]})
    clean: dict[tuple[str, str], list[tuple[str, str, str | None, bool]]] = {}
    for snapshot_id, task_id, instance_id, disk_cid, _state, cid, is_clean in sql.rows(
            "SELECT snapshot_id, task_id, instance_id, disk_cid, state, snapshot_cid, clean FROM snapshots_view "
            "WHERE trigger = 'job_update'"):
        clean.setdefault((task_id, instance_id), []).append((snapshot_id, disk_cid, cid, bool(is_clean)))
    taken = dict(sql.rows("SELECT aggregate_id, count(*) FROM audit_events WHERE type = 'Snapshot.Taken' "
                          "GROUP BY aggregate_id"))
    undrained = [key for key in clean if key not in stopped]
    if undrained:
        problems.append(f"{len(undrained)} instances with a clean snapshot but no completed drain and stop: "
                        f"{undrained[:3]}")
    ready = [(t, i) for t, i, _, _, state, _ in instances if state == "ready"]
    for key in ready:
        snaps = clean.get(key, [])
        by_disk = sorted(disk for _, disk, _, _ in snaps)
        if by_disk != sorted(disks.get(key, [])) or not by_disk:
            problems.append(f"ready instance {key}: clean snapshots of {by_disk}, announced disks "
                            f"{disks.get(key)}")
        for snapshot_id, disk, cid, is_clean in snaps:
            if taken.get(snapshot_id) != 1 or not cid or not is_clean:
                problems.append(f"ready instance {key}: the clean snapshot of {disk} ({snapshot_id}) was taken "
                                f"{taken.get(snapshot_id, 0)} times, cid {cid}, clean {is_clean}")
    return {"job_update_tasks": len(tasks),
            "job_update_tasks_done": sum(1 for _, state, _ in tasks if state == "done"),
            "job_update_instances_ready": len(ready), "job_update_failures": reasons,
            "clean_snapshots": sum(len(v) for v in clean.values()), "problems": problems}



def verify_views(database: str, workdir: Path) -> list[str]:
    """Replay the whole log into a scratch database (a schema, or a SQLite file)
    and compare every view table."""
    from snapledger.adapters.bootstrap import bootstrap, open_scratch
    from snapledger.adapters.config import Config
    from snapledger.projections.projector import Projector

    scratch_name = f"verify_{uuid.uuid4().hex[:10]}"
    runtime = bootstrap(Config(data_dir=workdir / "verify", database=database), frozenset())
    ledger = runtime.ledger
    scratch = open_scratch(runtime.url, scratch_name)
    db = scratch.db
    scratch_url = (f"sqlite:///{scratch.file}" if scratch.file is not None
                   else f"{database.partition('?')[0]}?schema={scratch_name}")
    differences: list[str] = []
    try:
        projector = Projector(db)
        projector.setup()
        position = 0
        while True:
            notifications = ledger.store.recorder.select_notifications(start=position, limit=2000,
                                                                 inclusive_of_start=False)
            if not notifications:
                break
            projector.apply([(n.id, ledger.store.mapper.to_domain_event(n)) for n in notifications])
            position = notifications[-1].id
        live, rebuilt = Sql(database), Sql(scratch_url)
        try:
            for view in projector.views:
                for table in view.tables:
                    a = sorted(map(repr, live.rows(f"SELECT * FROM {table}")))
                    b = sorted(map(repr, rebuilt.rows(f"SELECT * FROM {table}")))
                    if a != b:
                        differences.append(f"{table}: {len(set(a) - set(b))} live-only rows, "
                                           f"{len(set(b) - set(a))} rebuilt-only rows")
        finally:
            live.close()
            rebuilt.close()
    finally:
        runtime.close()
        patiently(scratch.close, print)  # its schema dropped, also while the server is full
    return differences


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"snapledger-chaos-{backend}-"))
    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    server = args.database.partition("?")[0]
    database = f"sqlite:///{workdir / 'ledger.sqlite'}" if backend == "sqlite" else f"{server}?schema={schema}"
    print(f"chaos run on {backend}: {args.commands} commands, {args.kills} kills, {args.double_kills} double "
          f"kills, logs in {workdir}", flush=True)
    try:
        return run_chaos(workdir, database, commands=args.commands, kills=args.kills, seed=args.seed,
                         double_kills=args.double_kills, progress=lambda line: print(line, flush=True))
    finally:
        if backend == "postgres":
            patiently(lambda: drop_schema(server, schema), print)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=30, help="random SIGKILLs per backend")
    parser.add_argument("--double-kills", type=int, default=2, help="staged double kills per backend (issue 16)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--database", default=os.environ.get("SNAPLEDGER_TEST_DSN",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="the PostgreSQL server (a schema of its own is created and dropped)")
    args = parser.parse_args()
    failed = False
    for backend in (("sqlite", "postgres") if args.backend == "both" else (args.backend,)):
        report = run_backend(backend, args)
        width = max(len(k) for k in report)
        print(f"--- {backend}")
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
        failed = failed or bool(report["problems"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
