"""A task: one per accepted command, like a BOSH task, finished when its operations are."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from .json_types import JsonObject

QUEUED, PROCESSING, DONE, ERROR = "queued", "processing", "done", "error"
CANCELLING, CANCELLED = "cancelling", "cancelled"  # as the Director's task states
TERMINAL_STATES = frozenset({DONE, ERROR, CANCELLED})

# Operation outcomes that do not fail a task.
GOOD_OUTCOMES = frozenset({"taken", "skipped", "deleted", "discovered", "ready", "restored"})


def _disk(outcome: JsonObject) -> str:
    # Job-update instance outcomes concern no single disk.
    return "" if outcome.get("disk_cid", "?") is None else f" disk {outcome.get('disk_cid', '?')}"


class Task(Aggregate):
    id: UUID  # lets the service layer choose the id (it is needed in the metadata)
    number: int | None = None  # set when its first event is saved (LedgerStore._save; the view keeps it)

    @event("Queued")
    def __init__(
        self,
        kind: str,
        description: str,
        deployment: str | None,
        operations: list[str],
        actor: str,
        trigger: str = "manual",
        context: JsonObject | None = None,
    ) -> None:
        self.kind = kind
        self.description = description
        self.deployment = deployment
        self.operations = list(operations)
        self.actor = actor
        self.trigger = trigger
        self.context = dict(context or {})
        self.state = QUEUED
        self.outcomes: dict[str, JsonObject] = {}
        self.result: str | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None

    @event("Started")
    def _start(self, worker: str, actor: str) -> None:
        self.state = PROCESSING
        self.started_at = self.modified_on

    @event("OperationsAdded")
    def _operations_added(self, operations: list[str], actor: str) -> None:
        self.operations.extend(operations)

    @event("OperationFinished")
    def _operation_finished(self, operation_id: str, outcome: str, detail: JsonObject, actor: str) -> None:
        self.outcomes[operation_id] = {"outcome": outcome, **detail}

    @event("CancelRequested")
    def _cancel_requested(self, actor: str) -> None:
        self.cancel_requested = True
        self.state = CANCELLING

    @event("Finished")
    def _finish(self, state: str, result: str, actor: str) -> None:
        self.state = state
        self.result = result
        self.finished_at = self.modified_on

    # Commands -------------------------------------------------------------

    def start(self, worker: str, actor: str) -> None:
        if self.state == QUEUED:
            self._start(worker=worker, actor=actor)

    def add_operations(self, operations: list[str], actor: str) -> None:
        """Operations found while the task runs (a self snapshot's disks)."""
        if operations:
            self._operations_added(operations=[str(o) for o in operations], actor=actor)

    def operation_finished(self, operation_id: UUID | str, outcome: str, detail: JsonObject, actor: str) -> None:
        """Record one operation's outcome; finish the task when it was the last one."""
        op = str(operation_id)
        if op in self.outcomes or op not in self.operations:
            return
        self._operation_finished(operation_id=op, outcome=outcome, detail=detail, actor=actor)
        if len(self.outcomes) == len(self.operations):
            state, result = self.summarise()
            self._finish(state=state, result=result, actor=actor)

    def request_cancel(self, actor: str) -> None:
        """Operations not started yet will not run; running ones end with their CPI call.
        The task ends `cancelled` when the last one has its outcome."""
        if not self.is_finished and not getattr(self, "cancel_requested", False):
            self._cancel_requested(actor=actor)

    def finish_empty(self, result: str, actor: str) -> None:
        """A task with nothing to do is done at once (e.g. a deployment without disks)."""
        self._finish(state=DONE, result=result, actor=actor)

    def summarise(self) -> tuple[str, str]:
        # An operation the operator cancelled is no failure; one a job update
        # cancelled after an instance failed is (it names why the update stopped).
        cancelled_by_request = getattr(self, "cancel_requested", False)
        failures = [o for o in self.outcomes.values() if o["outcome"] not in GOOD_OUTCOMES
                    and not (cancelled_by_request and o["outcome"] == "cancelled")]
        taken = [str(o["snapshot_cid"]) for o in self.outcomes.values() if o["outcome"] == "taken"]
        deleted = [str(o["snapshot_cid"]) for o in self.outcomes.values() if o["outcome"] == "deleted"]
        skipped = [o for o in self.outcomes.values() if o["outcome"] == "skipped"]
        ready = [o for o in self.outcomes.values() if o["outcome"] == "ready"]  # job updates
        parts = []
        if taken:
            parts.append(f"snapshot(s) {', '.join(taken)} created")
        if deleted:
            parts.append(f"snapshot(s) {', '.join(deleted)} deleted")
        if skipped:
            reasons = sorted({str(o.get("reason", "")) for o in skipped})
            parts.append(f"{len(skipped)} skipped ({'; '.join(reasons)})")
        if ready:
            parts.append(f"{len(ready)} instance(s) ready for update")
        # Restores: what was restored where, and what the operator does next.
        parts.extend(str(o.get("reason", "restored")) for o in self.outcomes.values() if o["outcome"] == "restored")
        if getattr(self, "cancel_requested", False):
            cancelled = sum(1 for o in self.outcomes.values() if o["outcome"] == "cancelled")
            return CANCELLED, ". ".join(["task cancelled", *parts, f"{cancelled} not started"] +
                                        ([f"{len(failures)} failed"] if failures else []))
        if failures:
            # Name every failed instance and disk: BOSH hides these (task `done`).
            named = "; ".join(
                f"{o.get('instance', '?')}{_disk(o)}: {o.get('error_type', '')}: {o.get('message', '')}"
                + (f" (after {o['attempts']} attempts)" if o.get("attempts") else "")
                for o in failures
            )
            parts.append(f"{len(failures)} failed: {named}")
            return ERROR, ". ".join(parts)
        return DONE, ". ".join(parts) or "nothing to do"

    @property
    def is_finished(self) -> bool:
        return self.state in TERMINAL_STATES
