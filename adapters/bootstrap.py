"""The composition root: configuration in, a running set of components out.

Every process is built here and nowhere else: the embedded `serve`, the split
`api`/`worker`/`projector`/`scheduler` roles, the CLI's store-opening commands
(`replay`), the ops scripts (ops/chaos.py, ops/bench/). Entry points only
choose the roles and, in tests and benchmarks, what to put in place of a part
(`bootstrap(config, roles, cpis=..., agent=...)`). Every dependency goes in
through a constructor; this module alone opens connection pools and creates
the schema (`create_schema`, one explicit step under the setup lock).
docs/decisions.md #30.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool
from snapledger.domain.agent import Agent
from snapledger.domain.application import Director, Ledger
from snapledger.domain.cpi import Cpi
from snapledger.domain.job_update_runner import JobUpdateRunner
from snapledger.domain.disk_locks import DiskLocks
from snapledger.domain.operations import OperationRunner
from snapledger.domain.restore_runner import RestoreRunner
from snapledger.domain.task_numbers import TASK_NUMBERS
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries
from snapledger.scheduler.process import Scheduler

from .config import Config, CpiSpec
from .cpi.kinds import restoring_cpis
from .follower import Batch, ChangeSignal, LogFollower, PostgresListener, StoreHealth
from .group_commit import GroupCommitter
from .job_update_worker import JobUpdateWorker
from .locks import FileDiskLocks, PostgresDiskLocks
from .log_worker import HEARTBEAT_DDL
from .metrics import PROJECTION_LAG_SECONDS, observe_cpi_call
from .rate_buckets import DDL as RATE_LIMIT_DDL
from .rate_limit import rate_limited
from .restore_worker import RestoreWorker
from .snapshot_worker import SnapshotWorker
from .task_progress_worker import TaskProgressFollower
from .task_number_lookup import event_store_numbers
from .store import (RECONNECT_TIMEOUT_S, Database, StoreUrl, ensure_schema, PostgresDatabase, ledger_env,
                    open_database, parse_store_url, setup_lock)
from snapledger.domain.log import Log


def build_cpis(config: Config) -> dict[str, Cpi]:
    """Every configured CPI by name (only worker processes call CPIs)."""
    return {name: _build_cpi(config, spec) for name, spec in config.cpi_specs().items()}


def _build_cpi(config: Config, spec: CpiSpec) -> Cpi:
    if spec.type == "local":
        from .cpi.local import LocalCpi

        disk_root = Path(spec.disk_root or config.data_dir / "disks")
        snapshot_root = Path(spec.snapshot_root or config.data_dir / "snapshots")
        disk_root.mkdir(parents=True, exist_ok=True)
        snapshot_root.mkdir(parents=True, exist_ok=True)
        if spec.self_disks is None:
            # By default this host's disk is the service's own data directory.
            return LocalCpi(disk_root, snapshot_root, host_disks={SELF_DATA_DISK: config.data_dir})
        paths = [d for d in spec.self_disks if str(d).startswith("/")]
        cids = [d for d in spec.self_disks if not str(d).startswith("/")]
        return LocalCpi(disk_root, snapshot_root, self_disks=cids,
                        host_disks={host_disk_cid(Path(p)): Path(p) for p in paths})
    from .cpi.external import ExternalCpi

    throttle_errors = spec.rate_limit.throttle_errors if spec.rate_limit else frozenset()
    return ExternalCpi(spec.name, spec.executable, properties=spec.properties, director_uuid=config.uuid,
                       timeout_s=spec.timeout_s, error_types=throttle_errors)


SELF_DATA_DISK = "snapledger-data"


def worker_id() -> str:
    """Unique per worker process run: a restarted worker is a new worker, and
    the calls its previous run left are found through that run's silence."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def crash_point_hook() -> Callable[[str], None] | None:
    """Test-only: SNAPLEDGER_CRASH_AT=call_started|cpi_returned|outcome_saved|in_doubt_marked makes
    the worker process die (no clean-up, like SIGKILL) the first time it gets there."""
    point = os.environ.get("SNAPLEDGER_CRASH_AT")
    if not point:
        return None

    def hook(step: str) -> None:
        if step == point:
            os._exit(86)

    return hook


def host_disk_cid(path: Path) -> str:
    """A readable, valid CID for a host directory: /var/vcap/store -> host-var-vcap-store."""
    slug = "-".join(part for part in re.split(r"[^A-Za-z0-9._]+", str(path)) if part)
    return ("host-" + slug)[:128] or "host-root"


ROLES = frozenset({"api", "worker", "projector", "scheduler"})


class Stoppable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Runtime:
    """The built parts of one process. `start` starts its background roles and
    `close` stops them and closes what the root opened; neither builds anything."""

    config: Config
    url: StoreUrl
    ledger: Ledger
    db: Database
    queries: Queries
    projector: Projector
    signal: ChangeSignal
    cpis: dict[str, Cpi]
    log: Log
    executor: ThreadPoolExecutor
    roles: frozenset[str] = ROLES
    health: StoreHealth = field(default_factory=StoreHealth)
    committer: GroupCommitter | None = None
    listener: PostgresListener | None = None
    # In start order; stopped in reverse (the scheduler first, the projector last).
    background: list[Stoppable] = field(default_factory=list)
    locks: DiskLocks | None = None
    agent: Agent | None = None
    beat_db: Database | None = None  # the worker role's heartbeat connection
    started: bool = False
    forget_task_numbers: Callable[[], None] = lambda: None  # unregisters the store's task-number lookup

    def start(self) -> None:
        self.started = True
        if self.listener is not None:
            self.listener.start()
        for part in self.background:
            part.start()

    def close(self) -> None:
        # Parts never started are not stopped: a stopping worker records its
        # position, and one that never followed the log has none to record
        # (`replay` and the chaos check close a runtime they never start).
        if self.started:
            for part in reversed(self.background):
                part.stop()
            if self.listener is not None:
                self.listener.stop()
        if isinstance(self.locks, PostgresDiskLocks):
            self.locks.close()
        self.executor.shutdown(wait=True)
        self.forget_task_numbers()
        if self.committer is not None:
            self.committer.stop()
        self.ledger.close()
        if self.beat_db is not None and self.beat_db is not self.db:
            self.beat_db.close()
        self.db.close()


def bootstrap(config: Config, roles: frozenset[str] | set[str] = ROLES, *,
              cpis: Mapping[str, Cpi] | None = None, agent: Agent | None = None) -> Runtime:
    """Build the process that runs `roles`. `cpis` and `agent` replace the
    configured CPIs and the local agent (benchmarks' instant CPI, tests' fakes
    at the IaaS boundary); rate limits still wrap the CPIs given."""
    roles = frozenset(roles)
    log = structlog.get_logger("snapledger").bind(roles=",".join(sorted(roles)))
    private_data_dir(config.data_dir)
    url = parse_store_url(config.database_url)
    specs = config.cpi_specs()
    if "worker" not in roles:
        cpis = {}  # only worker processes call CPIs
    elif cpis is None:
        cpis = build_cpis(config)
    with setup_lock(url):
        env = ledger_env(url)
        db = open_database(url)
        projector = Projector(db)
        create_schema(db, projector)
        queries = Queries(db)
        signal = ChangeSignal()
        ledger, committer = build_ledger(config, env, queries, signal, log)
        limited = rate_limited(dict(cpis), {name: spec.rate_limit for name, spec in specs.items()}, db,
                               log=log.bind(component="rate-limit"))
    apply_declared_settings(ledger, config)
    # Without group commit, size the executor within the event store's pool
    # (its timeouts retry 10x). With it, a thread waiting for its batch holds
    # no connection, and more threads in flight make fuller batches.
    executor = ThreadPoolExecutor(max_workers=32 if committer is not None else 8, thread_name_prefix="api")
    runtime = Runtime(config=config, url=url, ledger=ledger, db=db, queries=queries, projector=projector,
                      signal=signal, cpis=limited, log=log, executor=executor, roles=roles, committer=committer)
    runtime.forget_task_numbers = TASK_NUMBERS.add_resolver(event_store_numbers(db))  # log lines' `task`
    if url.kind == "postgres":
        runtime.listener = PostgresListener(url, signal, log, runtime.health)
    if "projector" in roles:
        runtime.background += [projection_follower(runtime), TaskProgressFollower(
            ledger, db, signal, log, lambda: projector.positions().get("tasks", 0), config.poll_interval_s)]
    if "worker" in roles:
        # The heartbeat's own connection: never queued behind the CPI threads' (decision 33).
        runtime.beat_db = PostgresDatabase(url, min_size=1, max_size=1) if url.kind == "postgres" else db
        runtime.locks = build_disk_locks(url, config)
        runtime.agent = agent if agent is not None else build_agent(config, log)
        runtime.background += build_workers(runtime, runtime.locks, runtime.agent)
    if "scheduler" in roles:
        runtime.background.append(Scheduler(ledger, log,
                                            missed_window=timedelta(seconds=config.missed_fire_window_s)))
    return runtime


@dataclass
class ScratchStore:
    """A throw-away view database beside a live store, for rebuilding views from
    the log (`replay`, the chaos run's check): a schema of the same PostgreSQL
    database, or a SQLite file next to the live one. `ref` is how the live
    database's connections name it (a schema, or the name it is attached as)."""

    url: StoreUrl
    db: Database
    ref: str
    file: Path | None = None

    def close(self) -> None:
        self.db.close()
        if self.file is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.file}{suffix}").unlink(missing_ok=True)
            return
        with psycopg.connect(self.url.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.ref)))


def open_scratch(live: StoreUrl, name: str) -> ScratchStore:
    """A fresh scratch store named `name` beside the store at `live` (views made by the rebuild)."""
    if live.kind == "postgres":
        url = replace(live, schema=name)
        ensure_schema(url)
        return ScratchStore(url, open_database(url), name)
    assert live.sqlite_path is not None
    file = live.sqlite_path.with_name(f"{live.sqlite_path.stem}.{name}.sqlite")
    url = parse_store_url(f"sqlite:///{file}")
    return ScratchStore(url, open_database(url), name, file)


def create_schema(db: Database, projector: Projector) -> None:
    """Every table of the views and the workers (the event store's own tables
    are the library's, made when the Ledger opens the store). Idempotent; the
    root runs it under the setup lock."""
    projector.setup()
    with db.transaction() as cur:
        cur.execute(HEARTBEAT_DDL)
        cur.execute(RATE_LIMIT_DDL)


def build_ledger(config: Config, env: dict[str, str], queries: Queries, signal: ChangeSignal,
                 log: Log) -> tuple[Ledger, GroupCommitter | None]:
    """The service layer and what it depends on: the one place a process's Ledger
    is made (with its group committer, which writes through the Ledger's store)."""
    committer = None
    if config.group_commit:
        # Writes through the ledger's own event store, built just below (nothing is saved before).
        committer = GroupCommitter(lambda events: ledger.store.events.put(events),
                                   log=log.bind(component="group-commit"), max_batch=config.group_commit_max_batch,
                                   max_wait_s=config.group_commit_max_wait_s)
    ledger = Ledger(env=env, director=Director(config.director_name, config.uuid),
                    default_cpi=config.default_cpi_name(), self_cpi=config.self_cpi_name(),
                    cpi_names=list(config.cpi_specs()), restoring_cpis=restoring_cpis(config.cpi_specs()),
                    disk_exists=local_disk_exists(config), retention_candidates=queries.retention_candidates,
                    record_events=committer.record if committer is not None else None, on_saved=[signal.fire],
                    managed=config.managed, declared_retention=config.retention_deployments)
    return ledger, committer


def build_disk_locks(url: StoreUrl, config: Config) -> PostgresDiskLocks | FileDiskLocks:
    """Per-disk locks across worker processes: advisory locks on a pool of their
    own (one connection per call in flight, plus one), or file locks on SQLite."""
    if url.kind != "postgres":
        return FileDiskLocks(config.data_dir / "locks")
    pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
        url.conninfo(), min_size=0, max_size=config.worker_max_in_flight + 1, timeout=30,
        kwargs={"autocommit": True}, open=True, name="disk-locks", reconnect_timeout=RECONNECT_TIMEOUT_S)
    return PostgresDiskLocks(pool)


def build_agent(config: Config, log: Log | None = None) -> Agent:
    """The local agent from configuration (`jobs_dir`, `drain_timeout`, `stop_command`, ...)."""
    from .agent_local import LocalAgent

    jobs_dir = config.jobs_dir or config.data_dir / "jobs"
    return LocalAgent(jobs_dir, drain_timeout_s=config.drain_timeout_s, stop_command=config.stop_command or None,
                      stop_timeout_s=config.stop_timeout_s, wait_scale=config.drain_wait_scale, log=log)


def build_workers(runtime: Runtime, locks: DiskLocks, agent: Agent) -> list[Stoppable]:
    """The worker role: the snapshot worker (it beats for the process), then the
    job-update and restore workers, one worker id for the three."""
    config, ledger, log = runtime.config, runtime.ledger, runtime.log
    specs = config.cpi_specs()
    worker = worker_id()
    operations = OperationRunner(ledger, runtime.cpis, worker=worker, log=log.bind(component="worker"),
                                 retry={name: spec.retry for name, spec in specs.items()},
                                 max_in_flight={name: spec.max_in_flight for name, spec in specs.items()},
                                 disk_locks=locks,
                                 retry_in_doubt={name: spec.retry_in_doubt for name, spec in specs.items()},
                                 on_step=crash_point_hook(), on_call=observe_cpi_call)
    job_updates = JobUpdateRunner(ledger, agent, worker=worker, log=log.bind(component="job-updates"))
    restores = RestoreRunner(ledger, agent, runtime.cpis, worker=worker, disk_locks=locks,
                             log=log.bind(component="restores"), on_call=observe_cpi_call)
    poll, lease = config.poll_interval_s, config.worker_lease_s
    return [SnapshotWorker(ledger, operations, runtime.db, runtime.queries, runtime.signal, log,
                           max_in_flight=config.worker_max_in_flight, poll_interval=poll, lease_s=lease,
                           beat_db=runtime.beat_db),
            JobUpdateWorker(ledger, job_updates, runtime.db, runtime.signal, log, poll_interval=poll, lease_s=lease),
            RestoreWorker(ledger, restores, runtime.db, runtime.signal, log, poll_interval=poll, lease_s=lease)]


def projection_follower(runtime: Runtime) -> LogFollower:
    """The projector role: follows the whole log into the views."""
    projector = runtime.projector

    def project(batch: Batch) -> None:
        projector.apply(batch)
        if batch:
            newest = batch[-1][1].timestamp
            PROJECTION_LAG_SECONDS.set(max((datetime.now(UTC) - newest).total_seconds(), 0.0))

    return LogFollower("projector", runtime.ledger, runtime.signal, project, projector.position, runtime.log,
                       batch_size=1000, poll_interval=runtime.config.poll_interval_s)


def private_data_dir(path: Path) -> None:
    """The data directory holds the ledger, credentials, drain scripts and the
    local CPI's disks and snapshots: the service user's only (0700), also when
    an older version or the operator created it more open."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def local_disk_exists(config: Config) -> Callable[[str, str], bool]:
    """Whether a disk exists in a local CPI, answered by any process of this host
    (the API refuses a restore into an existing disk before accepting it; the
    worker checks again before it writes)."""
    roots = {name: Path(spec.disk_root or config.data_dir / "disks")
             for name, spec in config.cpi_specs().items() if spec.type == "local"}

    def exists(cpi: str, disk_cid: str) -> bool:
        root = roots.get(cpi)
        return root is not None and os.path.lexists(root / disk_cid)

    return exists


def apply_declared_settings(ledger: Ledger, config: Config) -> None:
    """What the configuration declares is enforced at start (like a BOSH manifest)
    and managed by it from then on: the ledger refuses a runtime change of it.
    Undeclared settings keep what the ledger recorded (docs/decisions.md #8, #24).
    Each is recorded only when it changes, so a restart records nothing and a
    schedule keeps the moment it was really changed (no catch-up fire)."""
    from snapledger.domain.errors import DeploymentNotFound
    from snapledger.domain.retention import RetentionPolicy
    from snapledger.domain.settings import SCHEDULE_NAMES

    if config.enable_snapshots is not None:
        ledger.settings.set_snapshots_enabled(config.enable_snapshots, actor="config", declared=True)
    for name in SCHEDULE_NAMES:
        value = getattr(config, name)
        if value is not None:
            ledger.settings.set_schedule(name, None if value.strip().lower() in ("", "off") else value, actor="config",
                                declared=True)
    if "retention.default" in config.managed:
        ledger.retention.set_policy(None, RetentionPolicy.from_dict(config.retention_default), actor="config",
                             declared=True)
    for name, policy in config.retention_deployments.items():
        try:  # a deployment not recorded yet gets its policy when it is (DeploymentService.record)
            ledger.retention.set_policy(name, RetentionPolicy.from_dict(policy) if policy is not None else None,
                                 actor="config", declared=True)
        except DeploymentNotFound:
            continue
