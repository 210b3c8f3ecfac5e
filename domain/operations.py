"""Executing requested snapshot operations through a CPI.

The protocol that makes execution safe across any number of workers:
1. claim: append `CpiCallStarted` (with the task's `Started` when first). Two
   workers racing on the same snapshot version conflict; the loser skips.
2. call the CPI, outside any transaction.
3. record the outcome and the task's progress in one transaction.
A `CpiCallStarted` without an outcome is an in-doubt call, never silently repeated.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from . import cpi_answers as answers
from .cpi import DISK_NOT_FOUND, Cpi, CpiError, FindsSnapshots, calls_made
from .cpi_calls import record_calls
from .discovery import Operation, SelfDiscovery
from .disk_locks import DiskLocks
from .operation_outcomes import OutcomeRecorder
from .retry import NO_RETRY, RetryPolicy
from .snapshot import DELETING, IN_DOUBT, TAKING, Snapshot
from .task import Task
from .log import Log
from .json_types import JsonObject, json_object

if TYPE_CHECKING:
    from .application import Ledger
    from .services.base import Decide


class OperationRunner:
    def __init__(self, ledger: Ledger, cpis: Mapping[str, Cpi], worker: str,
                 log: Log | None = None, clock: Callable[[], float] = time.monotonic,
                 retry: Mapping[str, RetryPolicy] | None = None,
                 max_in_flight: Mapping[str, int] | None = None,
                 disk_locks: DiskLocks | None = None, sleep: Callable[[float], None] = time.sleep,
                 retry_in_doubt: Mapping[str, bool] | None = None,
                 on_step: Callable[[str], None] | None = None,
                 on_call: Callable[[str, str, str, float], None] | None = None) -> None:
        self.ledger = ledger
        self.cpis = cpis
        self.worker = worker
        self.log = log
        self.clock = clock
        self.retry = dict(retry or {})
        self.sleep = sleep
        self.disk_locks = disk_locks or DiskLocks()
        # At most N calls in flight per CPI (this process): an IaaS API has rate limits.
        # Opt-in per CPI: repeat an in-doubt snapshot_disk (may leak a second cloud snapshot).
        self.retry_in_doubt = dict(retry_in_doubt or {})
        self.on_step = on_step or (lambda step: None)  # crash-point tests hook in here
        self.on_call = on_call or (lambda cpi, method, outcome, duration: None)  # metrics
        # Operations this process is executing now, with how many threads run each: a
        # claim of ours that is not in here was abandoned (its thread failed), and
        # recovery may take it. Counted, not a set: a second run of the same operation
        # that found nothing to do must not hide the first, still in its CPI call (the
        # sweep then recorded our own live call in doubt).
        self.running: Counter[UUID] = Counter()
        self._running_lock = threading.Lock()
        self._outcome_recorder = OutcomeRecorder(ledger, self._persist)
        self.max_in_flight = {name: (max_in_flight or {}).get(name, 4) for name in cpis}
        self.in_flight = {name: threading.BoundedSemaphore(limit) for name, limit in self.max_in_flight.items()}

    def execute(self, operation_id: UUID) -> str | None:
        """Run the pending CPI call of one operation, if it is still pending.

        Returns the outcome name, or None when there was nothing to do (already
        handled, or claimed by another worker)."""
        with self._running_lock:
            self.running[operation_id] += 1
        try:
            return self._execute(operation_id)
        finally:
            with self._running_lock:
                self.running[operation_id] -= 1
                if not self.running[operation_id]:
                    del self.running[operation_id]

    def is_running(self, operation_id: UUID) -> bool:
        with self._running_lock:
            return operation_id in self.running

    def _execute(self, operation_id: UUID) -> str | None:
        operation: Operation = self.ledger.store.get_aggregate(operation_id)
        if operation.pending_method is None:
            return None
        if isinstance(operation, SelfDiscovery):
            return self._discover(operation_id, operation)
        snapshot_id, snapshot = operation_id, operation
        policy = self.retry.get(snapshot.cpi, NO_RETRY)
        with self.disk_locks.for_disk(snapshot.disk_cid):
            loaded: Snapshot | None = snapshot  # the first claim starts from what was just read
            while True:
                claimed = self._claim(snapshot_id, loaded)
                loaded = None
                if claimed is None:
                    return None
                snapshot, method = cast("tuple[Snapshot, str]", claimed)  # claimed by its id: the same kind
                self.on_step("call_started")
                outcome, record = self._call(snapshot, method)
                self.on_step("cpi_returned")
                error = json_object(record.get("error")) or {}
                if outcome == "failed" and error.get("ok_to_retry") and policy.should_retry(snapshot.attempts):
                    delay = policy.delay(snapshot.attempts)
                    if not self._record_attempt_failed(snapshot_id, record, delay):
                        return None
                    self.sleep(delay)
                    continue
                record["attempts"] = snapshot.attempts
                self._record(snapshot, outcome, record)
                self.on_step("outcome_saved")
                return outcome

    # Recovery: the worker of a started call died --------------------------------

    def recover(self, operation_id: UUID, dead_worker: str) -> str | None:
        """Record the abandoned call of `dead_worker` as in doubt and resolve it
        as far as it is safe: never silently repeated, never silently dropped.

        Returns what was done, or None when the call is no longer abandoned."""
        operation = self.ledger.store.get_aggregate(operation_id)
        if getattr(operation, "worker", None) != dead_worker:
            return None
        if isinstance(operation, SelfDiscovery):
            return self._recover_discovery(operation_id, dead_worker)
        if operation.state not in (TAKING, DELETING):
            return None
        reason = f"worker {dead_worker} stopped before recording the outcome of attempt {operation.attempts}"

        def mark() -> list[Aggregate]:
            snapshot = self.ledger.snapshots.get(operation_id)
            if snapshot.state not in (TAKING, DELETING) or snapshot.worker != dead_worker:
                return []
            snapshot.mark_in_doubt(reason, actor=self.worker)
            return [snapshot]

        if not self.ledger.store.save_with_retry(mark):
            return None
        self.on_step("in_doubt_marked")
        return self._resolve_in_doubt(operation_id)

    def resume_in_doubt(self, operation_id: UUID, dead_resolver: str | None) -> str | None:
        """Resolve an in-doubt call whose resolver stopped before it was done.

        Every step of the resolution checks the state it acts on, so resuming
        it (even twice) repeats nothing that happened. Returns what was done,
        or None when the call needs no resolving any more."""
        snapshot = self.ledger.store.get_aggregate(operation_id)
        if not isinstance(snapshot, Snapshot) or not snapshot.needs_resolving:
            return None
        if dead_resolver is not None and snapshot.in_doubt_resolver != dead_resolver:
            return None  # another worker took it over meanwhile
        if str(snapshot.id) in self.ledger.tasks.get(snapshot.current_task_id).outcomes:
            # Its task already ended on it (a ledger from before `InDoubtLeft`): say so, repeat nothing.
            self._finish_in_doubt(operation_id)
            return "in_doubt"
        return self._resolve_in_doubt(operation_id)

    def _resolve_in_doubt(self, snapshot_id: UUID) -> str:
        snapshot = self.ledger.snapshots.get(snapshot_id)
        cpi = self.cpis.get(snapshot.cpi)
        if snapshot.in_doubt_method == "delete_snapshot":
            # Deleting twice is harmless: the second answers DiskNotFound, which is `deleted`.
            return self._retry_in_doubt(snapshot_id, "a repeated delete_snapshot is safe")
        if isinstance(cpi, FindsSnapshots):
            lookup_error: CpiError | None = None
            try:
                found = cpi.find_snapshot(snapshot.disk_cid, snapshot.metadata)
            except CpiError as error:
                found, lookup_error = None, error
            if found is not None:
                record = {"method": "find_snapshot", "cpi": snapshot.cpi, "snapshot_cid": found,
                          "reason": "in-doubt call resolved: the CPI holds the snapshot"}
                self._record(snapshot, "taken", record)
                return "resolved_taken"
            if lookup_error is None:
                return self._retry_in_doubt(snapshot_id, "in-doubt call resolved: the CPI has no such snapshot")
        if self.retry_in_doubt.get(snapshot.cpi):
            return self._retry_in_doubt(snapshot_id, "retry of in-doubt calls is enabled for this CPI")
        self._finish_in_doubt(snapshot_id)
        return "in_doubt"

    def _retry_in_doubt(self, snapshot_id: UUID, reason: str) -> str:
        def decide() -> list[Aggregate]:
            snapshot = self.ledger.snapshots.get(snapshot_id)
            if snapshot.state != IN_DOUBT:
                return []
            snapshot.retry_in_doubt(reason, actor=self.worker)
            return [snapshot]

        self.ledger.store.save_with_retry(decide)
        outcome = self.execute(snapshot_id)
        return f"retried:{outcome}"

    def _finish_in_doubt(self, snapshot_id: UUID) -> None:
        """Left for the operator: the snapshot says so (the call leaves the
        sweep's unresolved set) and the task ends, naming the in-doubt call."""
        def decide() -> list[Aggregate]:
            snapshot = self.ledger.snapshots.get(snapshot_id)
            if not snapshot.needs_resolving:
                return []
            snapshot.leave_in_doubt("no safe way to learn whether the call happened; the operator decides",
                                    actor=self.worker)
            # `InDoubtLeft` ends the operation of its task (domain/services/task_progress.py).
            return [snapshot]

        self.ledger.store.save_with_retry(decide)

    def _recover_discovery(self, discovery_id: UUID, dead_worker: str) -> str | None:
        def decide() -> list[Aggregate]:
            found: SelfDiscovery = self.ledger.store.get_aggregate(discovery_id)
            if found.state != "discovering" or found.worker != dead_worker:
                return []
            found.retry_abandoned(f"worker {dead_worker} stopped; discovery only reads, so it is repeated",
                                  actor=self.worker)
            return [found]

        if not self.ledger.store.save_with_retry(decide):
            return None
        return f"retried:{self.execute(discovery_id)}"

    # Steps -------------------------------------------------------------------

    def _claim(self, operation_id: UUID, loaded: Operation | None = None) -> tuple[Operation, str] | None:
        """Claim the pending call; `loaded`: the operation as just read (saves a
        read; if it is stale, the save conflicts and the next round reads again)."""
        for _ in range(25):
            operation, loaded = loaded or self.ledger.store.get_aggregate(operation_id), None
            if operation.pending_method is None:
                return None
            # A snapshot's claim writes the snapshot only: its task hears of the
            # call from the log (task_progress.py); a discovery starts its task.
            changed: list[Aggregate] = [operation]
            if isinstance(operation, Snapshot):
                method = operation.start_cpi_call(worker=self.worker, actor=operation.current_actor)
            else:
                task: Task = self.ledger.tasks.get(_task_id(operation))
                method = operation.start_cpi_call(worker=self.worker, actor=task.actor)
                task.start(worker=self.worker, actor=task.actor)
                changed.append(task)
            try:
                self.ledger.store.save(*changed)
                return operation, method
            except IntegrityError:
                continue  # another worker claimed it, or the task moved on: look again
        return None

    # Self snapshots: discover the VM and its disks, then request their snapshots.

    def _discover(self, discovery_id: UUID, loaded: SelfDiscovery | None = None) -> str | None:
        claimed = self._claim(discovery_id, loaded)
        if claimed is None:
            return None
        discovery, _ = cast("tuple[SelfDiscovery, str]", claimed)  # claimed by its id: the same kind
        cpi = self.cpis[discovery.cpi]
        calls_made(cpi)  # forget calls this thread made for anything else
        started = self.clock()
        record: JsonObject = {"method": "current_vm_id", "cpi": discovery.cpi}
        try:
            vm_cid = answers.vm_cid(cpi.current_vm_id())
            record["method"] = "get_disks"
            disks = answers.disk_cids(cpi.get_disks(vm_cid))
            outcome = "discovered"
        except CpiError as error:
            record["error"] = error.as_dict()
            if error.is_not_implemented:
                outcome, record["reason"] = "skipped", f"CPI does not support {record['method']}: {error.message}"
            else:
                outcome = "failed"
        except Exception as error:  # record it, never lose it
            record["error"] = {"type": type(error).__name__, "message": str(error), "ok_to_retry": False}
            outcome = "failed"
        record["duration_s"] = round(self.clock() - started, 6)
        record_calls(record, calls_made(cpi))

        def decide() -> list[Aggregate]:
            found: SelfDiscovery = self.ledger.store.get_aggregate(discovery_id)
            if found.state != "discovering":
                return []
            task = self.ledger.tasks.get(found.task_id)
            call = {k: v for k, v in record.items() if k != "reason"}
            detail: JsonObject = {"instance": "self", "disk_cid": None, "snapshot_cid": None}
            snapshots: list[Snapshot] = []
            if outcome == "discovered":
                snapshots = self.ledger.self_snapshots.plan_disk_snapshots(task, found, vm_cid, disks)
                found.record_discovered(vm_cid=vm_cid, disks=disks, snapshots=[str(s.id) for s in snapshots],
                                        call=call, actor=task.actor)
                task.add_operations([str(s.id) for s in snapshots], actor=task.actor)
                detail["reason"] = f"VM {vm_cid}: {len(disks)} disk(s)"
            elif outcome == "skipped":
                found.record_skipped(reason=str(record["reason"]), call=call, actor=task.actor)
                detail["reason"] = record["reason"]
            else:
                failure = json_object(record["error"]) or {}
                found.record_failed(error=failure, call=call, actor=task.actor)
                detail.update(error_type=failure["type"], message=failure["message"])
            task.operation_finished(found.id, outcome, detail, actor=task.actor)
            return [found, task, *snapshots]

        self._persist(decide)
        return outcome

    def _record_attempt_failed(self, snapshot_id: UUID, record: JsonObject, delay: float) -> bool:
        recorded: list[str] = []  # the task the failed attempt was for, once recorded

        def decide() -> list[Aggregate]:
            snapshot = self.ledger.snapshots.get(snapshot_id)
            if snapshot.state not in (TAKING, DELETING):
                return []
            call = {k: v for k, v in record.items() if k not in ("snapshot_cid", "reason", "error")}
            snapshot.record_attempt_failed(error=json_object(record["error"]) or {}, call=call, retry_in_s=delay,
                                           actor=snapshot.current_actor)
            recorded[:] = [str(snapshot.current_task_id)]
            return [snapshot]

        self._persist(decide)
        if self.log is not None:
            failure = json_object(record["error"]) or {}
            self.log.warning("cpi call failed, will retry", snapshot_id=str(snapshot_id),
                             retry_in_s=round(delay, 3), error_type=failure["type"],
                             message=failure["message"], **({"task_id": recorded[0]} if recorded else {}))
        return bool(recorded)

    def _call(self, snapshot: Snapshot, method: str) -> tuple[str, JsonObject]:
        cpi = self.cpis[snapshot.cpi]
        slot = self.in_flight[snapshot.cpi]
        waited = not slot.acquire(blocking=False)
        if waited:
            slot.acquire()
        try:
            # A call that waited for a CPI slot may belong to a task cancelled
            # meanwhile (`bosh cancel-task`): then it is not made. Only after a
            # wait, so the common path reads nothing more.
            if waited and self.ledger.tasks.cancel_requested(snapshot.current_task_id):
                return "cancelled", {"method": method, "cpi": snapshot.cpi, "reason": "task cancelled"}
            return self._call_cpi(cpi, snapshot, method)
        finally:
            slot.release()

    def _call_cpi(self, cpi: Cpi, snapshot: Snapshot, method: str) -> tuple[str, JsonObject]:
        calls_made(cpi)  # forget calls this thread made for anything else
        started = self.clock()
        record: JsonObject = {"method": method, "cpi": snapshot.cpi}
        try:
            if method == "snapshot_disk":
                record["snapshot_cid"] = answers.snapshot_cid(cpi.snapshot_disk(snapshot.disk_cid, snapshot.metadata))
                outcome = "taken"
            else:
                cpi.delete_snapshot(snapshot.snapshot_cid or "")
                outcome, record["reason"] = "deleted", "deleted by the CPI"
        except CpiError as error:
            record["error"] = error.as_dict()
            if error.is_not_implemented and method == "snapshot_disk":
                outcome, record["reason"] = "skipped", f"CPI does not support disk snapshots: {error.message}"
            elif error.type == DISK_NOT_FOUND and method == "delete_snapshot":
                # Already gone in the IaaS: that is what the user wanted. BOSH
                # fails here and users looped forever (bosh-aws-cpi-release#35).
                outcome, record["reason"] = "deleted", f"already gone in the IaaS ({error.message})"
            else:
                outcome = "failed"
        except Exception as error:  # a bug or an unexpected adapter failure: record it, never lose it
            record["error"] = {"type": type(error).__name__, "message": str(error), "ok_to_retry": False}
            outcome = "failed"
        duration_s = round(self.clock() - started, 6)
        record["duration_s"] = duration_s
        record_calls(record, calls_made(cpi))
        self.on_call(snapshot.cpi, method, outcome, duration_s)
        if self.log is not None:
            # A failed call is an error line an operator can grep and alert on:
            # which deployment, instance, disk and snapshot, and what the CPI said.
            emit = self.log.error if outcome == "failed" else self.log.info
            failure = json_object(record.get("error")) or {}
            emit("cpi call", method=method, snapshot_id=str(snapshot.id), outcome=outcome,
                 duration_s=record["duration_s"], deployment=snapshot.deployment, instance=snapshot.instance_label,
                 disk_cid=snapshot.disk_cid, snapshot_cid=record.get("snapshot_cid") or snapshot.snapshot_cid,
                 cpi=snapshot.cpi, task_id=snapshot.current_task_id, request_id=record.get("request_id"),
                 **({"error_type": failure.get("type"), "message": failure.get("message")}
                    if outcome == "failed" else {}))
        return outcome, record

    def _persist(self, decide: Decide) -> list[Recording[UUID]]:
        """Save a CPI call's outcome whatever it takes: the call happened, and only this process knows its answer."""
        return self.ledger.store.save_through_outage(decide, "a CPI call's outcome", self.log, self.sleep)

    def _record(self, snapshot: Snapshot, outcome: str, record: JsonObject) -> None:
        self._outcome_recorder.record(snapshot, outcome, record)


def _task_id(operation: Operation) -> str:
    return operation.current_task_id if isinstance(operation, Snapshot) else operation.task_id
