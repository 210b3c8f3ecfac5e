"""The composition root: configuration in, a running set of components out.

Every process (`serve`, `api`, `worker`, `projector`) is built here; entry
points only choose which roles to start.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from snapledger.domain.application import Director, Ledger
from snapledger.domain.cpi import Cpi
from snapledger.domain.operations import OperationRunner
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries

from .config import Config, ConfigError
from .follower import ChangeSignal, LogFollower, PostgresListener
from .store import Database, StoreUrl, ledger_env, open_database, parse_store_url, setup_lock
from .worker import Worker

ROLES = frozenset({"api", "worker", "projector", "scheduler"})


def build_cpis(config: Config) -> dict[str, Cpi]:
    spec = dict(config.cpi)
    kind = spec.pop("type", "local")
    if kind == "local":
        from .cpi.local import LocalCpi

        disk_root = Path(spec.get("disk_root") or config.data_dir / "disks")
        snapshot_root = Path(spec.get("snapshot_root") or config.data_dir / "snapshots")
        disk_root.mkdir(parents=True, exist_ok=True)
        snapshot_root.mkdir(parents=True, exist_ok=True)
        return {"local": LocalCpi(disk_root, snapshot_root, self_disks=spec.get("self_disks"))}
    from .cpi.external import ExternalCpi

    if not spec.get("executable"):
        raise ConfigError("cpi.executable", "an external CPI needs the path of its executable")
    name = spec.get("name", "default")
    return {name: ExternalCpi(name, spec["executable"], properties=spec.get("properties") or {},
                              director_uuid=config.uuid, timeout_s=float(spec.get("timeout", 300)))}


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
    worker: Worker | None = None
    projection_follower: LogFollower | None = None
    scheduler: Any = None

    def start(self) -> None:
        """Start the background roles (worker, projector) of this process."""
        if self.url.kind == "postgres":
            self.listener = PostgresListener(self.url, self.signal, self.log)
            self.listener.start()
        if "projector" in self.roles:
            self.projection_follower = LogFollower(
                "projector", self.ledger, self.signal, self.projector.apply, self.projector.position,
                self.log, batch_size=1000, poll_interval=self.config.poll_interval_s,
            )
            self.projection_follower.start()
        if "worker" in self.roles:
            runner = OperationRunner(self.ledger, self.cpis, worker=f"{socket.gethostname()}:{id(self):x}",
                                     log=self.log.bind(component="worker"))
            self.worker = Worker(self.ledger, runner, self.db, self.signal, self.log,
                                 max_in_flight=self.config.worker_max_in_flight,
                                 poll_interval=self.config.poll_interval_s)
            self.worker.start()
        if "scheduler" in self.roles:
            from datetime import timedelta

            from snapledger.scheduler.process import Scheduler

            self.scheduler = Scheduler(self.ledger, self.log,
                                       missed_window=timedelta(seconds=self.config.missed_fire_window_s))
            self.scheduler.start()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.worker is not None:
            self.worker.stop()
        if self.projection_follower is not None:
            self.projection_follower.stop()
        if self.listener is not None:
            self.listener.stop()
        self.executor.shutdown(wait=True)
        self.ledger.close()
        self.db.close()


def build_runtime(config: Config, roles: frozenset[str] | set[str] = ROLES) -> Runtime:
    log = structlog.get_logger("snapledger").bind(roles=",".join(sorted(roles)))
    config.data_dir.mkdir(parents=True, exist_ok=True)
    url = parse_store_url(config.database_url)
    cpis = build_cpis(config) if "worker" in roles else {}
    with setup_lock(url):
        ledger = Ledger(env=ledger_env(url), director=Director(config.director_name, config.uuid),
                        default_cpi=next(iter(cpis), _default_cpi_name(config)))
        db = open_database(url)
        projector = Projector(db)
        projector.setup()
    signal = ChangeSignal()
    ledger.on_saved.append(signal.fire)
    apply_declared_settings(ledger, config)
    # Size the executor within the event store's pool (its timeouts retry 10x).
    executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="api")
    return Runtime(config=config, url=url, ledger=ledger, db=db, queries=Queries(db), projector=projector,
                   signal=signal, cpis=cpis, log=log, executor=executor, roles=frozenset(roles))


def apply_declared_settings(ledger: Ledger, config: Config) -> None:
    """Settings present in the configuration are enforced at start (like a BOSH
    manifest); absent ones leave what the ledger recorded (docs/decisions.md #8)."""
    if config.enable_snapshots is not None:
        ledger.set_snapshots_enabled(config.enable_snapshots, actor="config")
    for name in ("snapshot_schedule", "self_snapshot_schedule"):
        value = getattr(config, name)
        if value is not None:
            ledger.set_schedule(name, None if value.strip().lower() in ("", "off") else value, actor="config")


def _default_cpi_name(config: Config) -> str:
    if config.cpi.get("type", "local") == "local":
        return "local"
    return config.cpi.get("name", "default")
