"""One snapshot's whole life: requested, taken (or failed/skipped), deleted."""

from __future__ import annotations

from datetime import datetime
from collections.abc import Mapping
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .errors import InvalidState
from .json_types import JsonObject

# States
REQUESTED = "requested"  # accepted, no CPI call yet
TAKING = "taking"  # snapshot_disk call started
TAKEN = "taken"
FAILED = "failed"
SKIPPED = "skipped"
CANCELLED = "cancelled"  # its task was cancelled before the CPI call
DELETE_REQUESTED = "delete_requested"
DELETING = "deleting"  # delete_snapshot call started
DELETED = "deleted"
IN_DOUBT = "in_doubt"  # a CPI call whose worker died before recording its outcome

# States in which the snapshot exists in the cloud (what a deployment's snapshot count counts).
EXISTING_STATES = frozenset({TAKEN, DELETE_REQUESTED, DELETING})
# States the listing shows: existing, or in doubt (it may exist: the operator must see it).
LISTED_STATES = EXISTING_STATES | {IN_DOUBT}
IN_PROGRESS_STATES = frozenset({TAKING, DELETING})


class Snapshot(Aggregate):
    id: UUID  # lets the service layer choose the id (it is needed in the metadata)

    @event("Requested")
    def __init__(
        self,
        task_id: str,
        deployment: str,
        job: str,
        index: int | None,
        instance_id: str,
        disk_cid: str,
        trigger: str,
        clean: bool,
        metadata: JsonObject,
        cpi: str,
        actor: str,
    ) -> None:
        self.task_id = task_id
        self.deployment = deployment
        self.job = job
        self.index = index
        self.instance_id = instance_id
        self.disk_cid = disk_cid
        self.trigger = trigger
        self.clean = clean
        self.metadata = dict(metadata)
        self.cpi = cpi
        self.requested_by = actor
        self.deletion_requested_by: str | None = None
        self.state = REQUESTED
        self.snapshot_cid: str | None = None
        self.created_at: datetime | None = None
        self.deletion_task_id: str | None = None
        self.last_error: JsonObject | None = None
        self.attempts = 0
        self.worker: str | None = None
        self.in_doubt_method: str | None = None
        # Who is resolving the in-doubt call (the recovering worker), and whether
        # it was resolved as far as is safe and left for the operator.
        self.in_doubt_resolver: str | None = None
        self.left_for_operator = False
        self.pinned: str | None = None  # the reason (legal hold...), when pinned

    @event("CpiCallStarted")
    def _cpi_call_started(self, method: str, worker: str, attempt: int, task_id: str, actor: str,
                          caused_by: str | None = None) -> None:
        self.state = TAKING if method == "snapshot_disk" else DELETING
        self.attempts = attempt
        self.worker = worker

    @event("CpiCallInDoubt")
    def _cpi_call_in_doubt(self, method: str, worker: str, attempt: int, reason: str, task_id: str,
                           actor: str, caused_by: str | None = None) -> None:
        # The call may or may not have happened in the IaaS: never silently repeated.
        self.state = IN_DOUBT
        self.in_doubt_method = method
        self.in_doubt_resolver = actor
        self.left_for_operator = False

    @event("InDoubtLeft")
    def _in_doubt_left(self, method: str, worker: str, reason: str, task_id: str, actor: str,
                       caused_by: str | None = None) -> None:
        # Resolved as far as is safe: what is left is the operator's to decide.
        # `worker` is the worker whose call is in doubt (for the operator).
        self.left_for_operator = True

    @event("InDoubtRetried")
    def _in_doubt_retried(self, method: str, reason: str, task_id: str, actor: str) -> None:
        self.state = REQUESTED if method == "snapshot_disk" else DELETE_REQUESTED
        self.in_doubt_method = None
        self.in_doubt_resolver = None

    @event("Taken")
    def _taken(self, snapshot_cid: str, call: JsonObject, task_id: str, actor: str,
               caused_by: str | None = None) -> None:
        self.state = TAKEN
        self.snapshot_cid = snapshot_cid
        self.created_at = self.modified_on

    @event("Failed")
    def _failed(self, error: JsonObject, call: JsonObject, task_id: str, actor: str,
                caused_by: str | None = None) -> None:
        self.state = FAILED
        self.last_error = dict(error)

    @event("Skipped")
    def _skipped(self, reason: str, call: JsonObject, task_id: str, actor: str,
                 caused_by: str | None = None) -> None:
        self.state = SKIPPED

    @event("AttemptFailed")
    def _attempt_failed(self, method: str, attempt: int, error: JsonObject, call: JsonObject,
                        retry_in_s: float, task_id: str, actor: str, caused_by: str | None = None) -> None:
        # Pending again: the next attempt is claimed with a new CpiCallStarted,
        # so a worker that dies while waiting leaves a plain pending request.
        self.state = REQUESTED if method == "snapshot_disk" else DELETE_REQUESTED
        self.last_error = dict(error)

    @event("Pinned")
    def _pinned(self, reason: str, actor: str) -> None:
        self.pinned = reason

    @event("Unpinned")
    def _unpinned(self, reason: str, actor: str) -> None:
        self.pinned = None

    @event("Expired")
    def _expired(self, policy: JsonObject, reason: str, task_id: str, actor: str) -> None:
        pass  # the retention decision; the deletion follows in the same transaction

    @event("Cancelled")
    def _cancelled(self, method: str, reason: str, task_id: str, actor: str, caused_by: str | None = None) -> None:
        # A call never started: a snapshot never taken, or a deletion not done (still taken).
        self.state = CANCELLED if method == "snapshot_disk" else TAKEN

    @event("DeletionRequested")
    def _deletion_requested(self, task_id: str, actor: str) -> None:
        self.state = DELETE_REQUESTED
        self.deletion_task_id = task_id
        self.deletion_requested_by = actor
        self.attempts = 0  # attempts count per CPI method

    @event("Deleted")
    def _deleted(self, reason: str, call: JsonObject, task_id: str, actor: str,
                 caused_by: str | None = None) -> None:
        self.state = DELETED

    @event("DeletionFailed")
    def _deletion_failed(self, error: JsonObject, call: JsonObject, task_id: str, actor: str,
                         caused_by: str | None = None) -> None:
        # Still in the cloud, still listed: the operator can retry the deletion.
        self.state = TAKEN
        self.last_error = dict(error)

    # Commands -------------------------------------------------------------

    @property
    def cause(self) -> str:
        """The id of this snapshot's latest event (`<aggregate id>/<version>`): what the
        next event follows from. A CPI call follows from its request, an outcome
        from its call: the audit shows the chain."""
        return f"{self.id}/{self.version}"

    @property
    def current_task_id(self) -> str:
        deleting = self.state in (DELETE_REQUESTED, DELETING) or (
            self.state == IN_DOUBT and self.in_doubt_method == "delete_snapshot")
        task_id = self.deletion_task_id if deleting else self.task_id
        assert task_id is not None  # a deletion always names its task
        return task_id

    @property
    def current_actor(self) -> str:
        """Who asked for the pending or running call: the task's actor, known
        here so a worker need not read the task (a task of 10,000 operations)."""
        if self.current_task_id == self.deletion_task_id and self.deletion_requested_by is not None:
            return self.deletion_requested_by
        return self.requested_by

    def mark_in_doubt(self, reason: str, actor: str) -> str:
        """The worker running this snapshot's CPI call died; returns the method."""
        if self.state not in IN_PROGRESS_STATES:
            raise InvalidState(f"snapshot {self.id} is {self.state}; no CPI call in progress")
        method = "snapshot_disk" if self.state == TAKING else "delete_snapshot"
        self._cpi_call_in_doubt(method=method, worker=self.worker or "?", attempt=self.attempts, reason=reason,
                                task_id=self.current_task_id, actor=actor, caused_by=self.cause)
        return method

    def retry_in_doubt(self, reason: str, actor: str) -> None:
        """Make the in-doubt call pending again: only when repeating it cannot
        create a second cloud snapshot (a deletion, a deterministic CID, or the
        operator's opt-in)."""
        self._require(IN_DOUBT)
        self._in_doubt_retried(method=self.in_doubt_method or "snapshot_disk", reason=reason,
                               task_id=self.current_task_id, actor=actor)

    def leave_in_doubt(self, reason: str, actor: str) -> None:
        """Nothing more can safely be done by a worker: the operator decides."""
        self._require(IN_DOUBT)
        if not self.left_for_operator:
            self._in_doubt_left(method=self.in_doubt_method or "snapshot_disk", worker=self.worker or "?",
                                reason=reason, task_id=self.current_task_id, actor=actor, caused_by=self.cause)

    @property
    def needs_resolving(self) -> bool:
        """An in-doubt call no worker has finished resolving (its resolver may have died)."""
        return self.state == IN_DOUBT and not self.left_for_operator

    @property
    def pending_method(self) -> str | None:
        """The CPI method this snapshot waits for, if any."""
        return {REQUESTED: "snapshot_disk", DELETE_REQUESTED: "delete_snapshot"}.get(self.state)

    def start_cpi_call(self, worker: str, actor: str) -> str:
        method = self.pending_method
        if method is None:
            raise InvalidState(f"snapshot {self.id} is {self.state}; no CPI call pending")
        self._cpi_call_started(
            method=method, worker=worker, attempt=self.attempts + 1, task_id=self.current_task_id,
            actor=actor, caused_by=self.cause
        )
        return method

    def record_taken(self, snapshot_cid: str, call: JsonObject, actor: str) -> None:
        self._require(TAKING, IN_DOUBT)
        self._taken(snapshot_cid=snapshot_cid, call=call, task_id=self.task_id, actor=actor, caused_by=self.cause)

    def record_failed(self, error: JsonObject, call: JsonObject, actor: str) -> None:
        if self.state == DELETING:
            self._deletion_failed(error=error, call=call, task_id=self.current_task_id,
                                  actor=actor, caused_by=self.cause)
        else:
            self._require(TAKING)
            self._failed(error=error, call=call, task_id=self.task_id, actor=actor, caused_by=self.cause)

    def record_attempt_failed(self, error: JsonObject, call: JsonObject, retry_in_s: float,
                              actor: str) -> None:
        """A retryable failure (`ok_to_retry`) that will be tried again."""
        if self.state not in (TAKING, DELETING):
            raise InvalidState(f"snapshot {self.id} is {self.state}; no CPI call in progress")
        self._attempt_failed(method="snapshot_disk" if self.state == TAKING else "delete_snapshot",
                             attempt=self.attempts, error=error, call=call, retry_in_s=round(retry_in_s, 3),
                             task_id=self.current_task_id, actor=actor, caused_by=self.cause)

    def cancel(self, reason: str, actor: str) -> None:
        """Its task was cancelled before this snapshot's CPI call started (`bosh cancel-task`)."""
        method = self.pending_method
        if method is None:
            raise InvalidState(f"snapshot {self.id} is {self.state}; no CPI call pending")
        self._cancelled(method=method, reason=reason, task_id=self.current_task_id, actor=actor, caused_by=self.cause)

    def record_cancelled(self, reason: str, actor: str) -> None:
        """A claimed call its worker did not make: the task was cancelled while it waited for a CPI slot."""
        self._require(TAKING, DELETING)
        self._cancelled(method="snapshot_disk" if self.state == TAKING else "delete_snapshot", reason=reason,
                        task_id=self.current_task_id, actor=actor, caused_by=self.cause)

    def record_skipped(self, reason: str, call: JsonObject, actor: str) -> None:
        self._require(TAKING)
        self._skipped(reason=reason, call=call, task_id=self.task_id, actor=actor, caused_by=self.cause)

    def pin(self, reason: str, actor: str) -> None:
        if self.state not in LISTED_STATES and self.state != IN_DOUBT:
            raise InvalidState(f"snapshot {self.snapshot_cid or self.id} is {self.state} and cannot be pinned")
        if self.pinned != reason:
            self._pinned(reason=reason, actor=actor)

    def unpin(self, reason: str, actor: str) -> None:
        if self.pinned is not None:
            self._unpinned(reason=reason, actor=actor)

    def expire(self, policy: JsonObject, reason: str, task_id: str, actor: str) -> None:
        """A retention policy lets this snapshot go; its deletion is requested with it."""
        if self.pinned is not None:
            raise InvalidState(f"snapshot {self.snapshot_cid} is pinned ({self.pinned})")
        self._require(TAKEN)
        self._expired(policy=policy, reason=reason, task_id=task_id, actor=actor)
        self.request_deletion(task_id=task_id, actor=actor)

    def request_deletion(self, task_id: str, actor: str) -> None:
        if self.pinned is not None:
            raise InvalidState(f"snapshot {self.snapshot_cid} is pinned ({self.pinned}); unpin it first")
        if self.state in (DELETE_REQUESTED, DELETING):
            raise InvalidState(f"snapshot {self.snapshot_cid} is already being deleted (task {self.deletion_task_id})")
        if self.state != TAKEN:
            raise InvalidState(f"snapshot {self.snapshot_cid or self.id} is {self.state} and cannot be deleted")
        self._deletion_requested(task_id=task_id, actor=actor)

    def record_deleted(self, reason: str, call: JsonObject, actor: str) -> None:
        self._require(DELETING)
        self._deleted(reason=reason, call=call, task_id=self.current_task_id, actor=actor, caused_by=self.cause)

    def _require(self, *states: str) -> None:
        if self.state not in states:
            raise InvalidState(f"snapshot {self.id} is {self.state}, expected {' or '.join(states)}")

    @property
    def instance_label(self) -> str:
        return f"{self.job}/{self.index if self.index is not None else self.instance_id}"


def snapshot_cid_id(snapshot_cid: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:/snapshot-cids/{snapshot_cid}")


class SnapshotCid(Aggregate):
    """Unique index CID -> snapshot, written in the same transaction as `Snapshot.Taken`.

    It makes "delete snapshot by CID" strongly consistent (no wait for a view)
    and rejects a CPI that hands out a CID already in the ledger.
    """

    @staticmethod
    def create_id(snapshot_cid: str) -> UUID:
        return snapshot_cid_id(snapshot_cid)

    @event("Assigned")
    def __init__(self, snapshot_cid: str, snapshot_id: str) -> None:
        self.snapshot_cid = snapshot_cid
        self.snapshot_id = snapshot_id


class Refusal(Aggregate):
    """A command refused for a reason worth auditing (e.g. snapshots disabled)."""

    @event("Recorded")
    def __init__(self, command: str, reason: str, deployment: str | None, details: Mapping[str, object],
                 actor: str) -> None:
        self.command = command
        self.reason = reason
