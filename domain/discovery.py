"""Self snapshots: ask the CPI which VM we run on and which disks it has (BOSH `SnapshotSelf`)."""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event

from .json_types import JsonObject
from .snapshot import Snapshot

REQUESTED, DISCOVERING, DISCOVERED, SKIPPED, FAILED = "requested", "discovering", "discovered", "skipped", "failed"


class SelfDiscovery(Aggregate):
    @event("Requested")
    def __init__(self, task_id: str, cpi: str, trigger: str, actor: str) -> None:
        self.task_id = task_id
        self.cpi = cpi
        self.trigger = trigger
        self.state = REQUESTED
        self.attempts = 0
        self.worker: str | None = None

    @event("CpiCallStarted")
    def _started(self, method: str, worker: str, attempt: int, task_id: str, actor: str) -> None:
        self.state = DISCOVERING
        self.attempts = attempt
        self.worker = worker

    @event("InDoubtRetried")
    def _in_doubt_retried(self, worker: str, reason: str, task_id: str, actor: str) -> None:
        # Discovery only reads (current_vm_id, get_disks): repeating it is safe.
        self.state = REQUESTED

    @event("Discovered")
    def _discovered(self, vm_cid: str, disks: list[str], snapshots: list[str], call: JsonObject,
                    task_id: str, actor: str) -> None:
        self.state = DISCOVERED

    @event("Skipped")
    def _skipped(self, reason: str, call: JsonObject, task_id: str, actor: str) -> None:
        self.state = SKIPPED

    @event("Failed")
    def _failed(self, error: JsonObject, call: JsonObject, task_id: str, actor: str) -> None:
        self.state = FAILED

    @property
    def pending_method(self) -> str | None:
        return "current_vm_id" if self.state == REQUESTED else None

    def start_cpi_call(self, worker: str, actor: str) -> str:
        self._started(method="current_vm_id", worker=worker, attempt=self.attempts + 1, task_id=self.task_id,
                      actor=actor)
        return "current_vm_id"

    def retry_abandoned(self, reason: str, actor: str) -> None:
        if self.state == DISCOVERING:
            self._in_doubt_retried(worker=self.worker or "?", reason=reason, task_id=self.task_id, actor=actor)

    def record_discovered(self, vm_cid: str, disks: list[str], snapshots: list[str], call: JsonObject,
                          actor: str) -> None:
        self._discovered(vm_cid=vm_cid, disks=disks, snapshots=snapshots, call=call, task_id=self.task_id,
                         actor=actor)

    def record_skipped(self, reason: str, call: JsonObject, actor: str) -> None:
        self._skipped(reason=reason, call=call, task_id=self.task_id, actor=actor)

    def record_failed(self, error: JsonObject, call: JsonObject, actor: str) -> None:
        self._failed(error=error, call=call, task_id=self.task_id, actor=actor)


# What an operation id names: a snapshot's CPI call, or a self-snapshot's discovery.
Operation = Snapshot | SelfDiscovery
