"""The composition root: configuration in, a running set of components out.

Every process (`serve`, `api`, `worker`, `projector`) is built here; entry
points only choose which roles to start.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from snapledger.domain.application import Director, Ledger
from snapledger.domain.cpi import Cpi
from snapledger.domain.operations import OperationRunner
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries

from .config import Config, CpiSpec
from .group_commit import GroupCommitter
from .follower import ChangeSignal, LogFollower, PostgresListener, StoreHealth
from .store import (Database, StoreUrl, ledger_env, open_database, parse_store_url, setup_lock,
                    tune_pool_recovery)
from .locks import disk_locks
from .rate_limit import rate_limited
from .metrics import PROJECTION_LAG_SECONDS, observe_cpi_call
from .worker import Worker

ROLES = frozenset({"api", "worker", "projector", "scheduler"})


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


def crash_point_hook() -> Any:
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


@dataclass
class Runtime:
    config: Config
    url: StoreUrl
    ledger: Ledger
    db: Database
    queries: Queries
    projector: Projector
    signal: ChangeSignal
    cpis: dict[str, Cpi]
    log: Any
    executor: ThreadPoolExecutor
    roles: frozenset[str] = ROLES
    followers: list[Any] = field(default_factory=list)
    listener: PostgresListener | None = None
    health: StoreHealth = field(default_factory=StoreHealth)
    worker: Worker | None = None
    projection_follower: LogFollower | None = None
    scheduler: Any = None
    locks: Any = None
    agent: Any = None  # drains and stops jobs (job updates); built from config unless preset
    job_worker: Any = None
    committer: GroupCommitter | None = None
    restore_worker: Any = None

    def start(self) -> None:
        """Start the background roles (worker, projector) of this process."""
        # Every module that defines aggregates is imported before the first thread
        # starts: eventsourcing builds an aggregate class by iterating the base
        # class's __dict__, which a follower thread may change meanwhile (Python
        # adds `Aggregate.__annotations__` lazily on first use). The chaos run saw
        # a worker crash so at start-up ("dictionary changed size during
        # iteration"), half started: beating, yet without its restore worker.
        from snapledger.scheduler.process import Scheduler

        from .job_worker import start_job_worker
        from .restore_worker import start_restore_worker

        if self.url.kind == "postgres":
            self.listener = PostgresListener(self.url, self.signal, self.log, self.health)
            self.listener.start()
        if "projector" in self.roles:
            self.projection_follower = LogFollower(
                "projector", self.ledger, self.signal, self._project, self.projector.position,
                self.log, batch_size=1000, poll_interval=self.config.poll_interval_s,
            )
            self.projection_follower.start()
        if "worker" in self.roles:
            specs = self.config.cpi_specs()
            runner = OperationRunner(self.ledger, self.cpis, worker=worker_id(),
                                     log=self.log.bind(component="worker"),
                                     retry={name: spec.retry for name, spec in specs.items()},
                                     max_in_flight={name: spec.max_in_flight for name, spec in specs.items()},
                                     disk_locks=self._disk_locks(),
                                     retry_in_doubt={name: spec.retry_in_doubt for name, spec in specs.items()},
                                     on_step=crash_point_hook(), on_call=observe_cpi_call)
            self.worker = Worker(self.ledger, runner, self.db, self.signal, self.log,
                                 max_in_flight=self.config.worker_max_in_flight,
                                 poll_interval=self.config.poll_interval_s, lease_s=self.config.worker_lease_s)
            self.worker.start()
            self.job_worker = start_job_worker(self, worker=runner.worker)
            self.restore_worker = start_restore_worker(self, worker=runner.worker)
        if "scheduler" in self.roles:
            from datetime import timedelta

            self.scheduler = Scheduler(self.ledger, self.log,
                                       missed_window=timedelta(seconds=self.config.missed_fire_window_s))
            self.scheduler.start()

    def _project(self, batch: Any) -> None:
        self.projector.apply(batch)
        if batch:
            newest = batch[-1][1].timestamp
            PROJECTION_LAG_SECONDS.set(max((datetime.now(timezone.utc) - newest).total_seconds(), 0.0))

    def _disk_locks(self) -> Any:
        self.locks = disk_locks(self.url, self.config)
        return self.locks

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.job_worker is not None:
            self.job_worker.stop()
        if self.restore_worker is not None:
            self.restore_worker.stop()
        if self.worker is not None:
            self.worker.stop()
        if self.locks is not None:
            self.locks.close()
        if self.projection_follower is not None:
            self.projection_follower.stop()
        if self.listener is not None:
            self.listener.stop()
        self.executor.shutdown(wait=True)
        if self.committer is not None:
            self.committer.stop()
        self.ledger.close()
        self.db.close()


def private_data_dir(path: Path) -> None:
    """The data directory holds the ledger, credentials, drain scripts and the
    local CPI's disks and snapshots: the service user's only (0700), also when
    an older version or the operator created it more open."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def build_runtime(config: Config, roles: frozenset[str] | set[str] = ROLES) -> Runtime:
    log = structlog.get_logger("snapledger").bind(roles=",".join(sorted(roles)))
    private_data_dir(config.data_dir)
    url = parse_store_url(config.database_url)
    cpis = build_cpis(config) if "worker" in roles else {}
    with setup_lock(url):
        db = open_database(url)
        queries = Queries(db)
        signal = ChangeSignal()
        committer = None
        if config.group_commit:
            # Writes through the ledger's own event store, built just below (nothing is saved before).
            committer = GroupCommitter(lambda events: ledger.store.events.put(events),
                                       log=log.bind(component="group-commit"), max_batch=config.group_commit_max_batch,
                                       max_wait_s=config.group_commit_max_wait_s)
        ledger = Ledger(env=ledger_env(url), director=Director(config.director_name, config.uuid),
                        default_cpi=config.default_cpi_name(), self_cpi=config.self_cpi_name(),
                        cpi_names=list(config.cpi_specs()),
                        cpi_types={name: spec.type for name, spec in config.cpi_specs().items()},
                        disk_exists=local_disk_exists(config), retention_candidates=queries.retention_candidates,
                        record_events=committer.record if committer is not None else None, on_saved=[signal.fire],
                        managed=config.managed, declared_retention=config.retention_deployments)
        tune_pool_recovery(ledger)
        cpis = rate_limited(cpis, {name: spec.rate_limit for name, spec in config.cpi_specs().items()}, db,
                            log=log.bind(component="rate-limit"))
        projector = Projector(db)
        projector.setup()
    apply_declared_settings(ledger, config)
    # Without group commit, size the executor within the event store's pool
    # (its timeouts retry 10x). With it, a thread waiting for its batch holds
    # no connection, and more threads in flight make fuller batches.
    executor = ThreadPoolExecutor(max_workers=32 if committer is not None else 8, thread_name_prefix="api")
    return Runtime(config=config, url=url, ledger=ledger, db=db, queries=queries, projector=projector,
                   signal=signal, cpis=cpis, log=log, executor=executor, roles=frozenset(roles),
                   committer=committer)


def local_disk_exists(config: Config) -> Any:
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
