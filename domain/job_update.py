"""Job updates: drain -> stop -> clean snapshot -> ready for update, per instance.

BOSH takes its only *clean* snapshots inside a deploy's instance update
(`instance_updater/update_procedure.rb`): the jobs are drained and stopped,
then every persistent disk is snapshotted with `clean: true`, then the VM and
disks are updated. Here whatever deploys announces the update; snapledger
drains and stops the jobs through an agent, takes the clean snapshots through
the CPI (the ordinary Snapshot/OperationRunner path), and reports each
instance *ready for update*. A failed drain, stop or snapshot fails the
instance and it is never reported ready.

One `JobUpdate` aggregate per announcement holds every instance's progress:
its events are the task's log in order, and because every step appends to it
under optimistic concurrency, two workers can never both start an instance
and `max_in_flight` holds across any number of workers. Each event names its
instance with the references the audit filters by (deployment, job, index,
instance id, disks: decision 21) and carries `caused_by`: the id
(`<aggregate id>/<version>`) of the event it follows from (the instance's
previous event; for a snapshot's outcome, the snapshot's outcome event).

Each instance carries the drain scripts' `current_state` and `next_state`
(BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE), fixed at the announcement from the
inventory's recorded disk size and the announced next size.

A worker that dies while it drains or stops an instance is found by the
recovery sweep of the job-update worker (its heartbeat older than the lease):
the instance is recorded failed (`WorkerLost`), which then goes on like any
failed step. The drain is not run again: a drain script may move data or
leave jobs half stopped, and running it twice is not obviously safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, CanMutateAggregate, event

from .agent import AGENT_ERROR, WORKER_LOST, AgentResult
from .errors import InvalidState
from .json_types import JsonObject

KIND = "update_job"
TRIGGER = "job_update"

WAITING, DRAINING, STOPPING, SNAPSHOTTING = "waiting", "draining", "stopping", "snapshotting"
READY, FAILED, CANCELLED = "ready", "failed", "cancelled"
IN_FLIGHT = frozenset({DRAINING, STOPPING, SNAPSHOTTING})
# States in which a worker holds the instance (runs its drain or stop): what the recovery sweep looks at.
CLAIMED_STATES = frozenset({DRAINING, STOPPING})
SNAPSHOT_OK = frozenset({"taken", "skipped"})


def job_update_id(task_id: str | UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:/job-updates/{task_id}")


def instance_operation_id(task_id: str | UUID, instance_id: str) -> str:
    """The instance's operation on the task (a task finishes when all have outcomes)."""
    return str(uuid5(NAMESPACE_URL, f"snapledger:/job-updates/{task_id}/{instance_id}"))


class PlannedInstance(TypedDict):
    """One instance of a job update as the service plans it (the announcement's)."""

    id: str
    job: str
    index: int
    disks: list[str]
    jobs: list[str]
    operation_id: str
    current_state: JsonObject
    next_state: JsonObject
    agent_id: NotRequired[str]
    persistent_disk: NotRequired[int]
    # {type, message}: set by the event that failed the instance. Declared here, not on
    # UpdateInstance, so an UpdateInstance may be built from a PlannedInstance by `**`.
    error: NotRequired[dict[str, str]]


class UpdateInstance(PlannedInstance):
    """An instance as the update's events leave it."""

    state: str
    worker: str | None
    snapshots: list[str]
    cause: str


def label_of(inst: Mapping[str, object]) -> str:
    return f"{inst['job']}/{inst['index'] if inst.get('index') is not None else inst['id']}"


class JobUpdate(Aggregate):
    @staticmethod
    def create_id(task_id: str) -> UUID:
        return job_update_id(task_id)

    @event("Announced")
    def __init__(self, task_id: str, deployment: str, job: str, index_or_id: str | None,
                 instances: list[PlannedInstance], drain_type: str, current_state: JsonObject,
                 next_state: JsonObject, max_in_flight: int, actor: str) -> None:
        self.task_id = task_id
        self.deployment = deployment
        self.job = job
        self.drain_type = drain_type
        self.current_state = dict(current_state)
        self.next_state = dict(next_state)
        self.max_in_flight = max_in_flight
        # `cause`: the instance's latest event, what its next one follows from (the announcement first).
        self.instances: list[UpdateInstance] = [
            {**i, "state": WAITING, "worker": None, "snapshots": [], "cause": f"{self.id}/{self.version}"}
            for i in instances]

    # Events: each names the instance, so the task log reads on its own. `caused_by`
    # defaults to None: events recorded before causation existed have none.

    @event("DrainStarted")
    def _drain_started(self, task_id: str, instance_id: str, instance: str, worker: str, drain_type: str,
                       jobs: list[str], actor: str, caused_by: str | None = None,
                       deployment: str | None = None, job: str | None = None,
                       index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=DRAINING, worker=worker)

    @event("DrainCompleted")
    def _drain_completed(self, task_id: str, instance_id: str, instance: str, result: JsonObject,
                         actor: str, caused_by: str | None = None,
                         deployment: str | None = None, job: str | None = None,
                         index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=STOPPING)

    @event("DrainFailed")
    def _drain_failed(self, task_id: str, instance_id: str, instance: str, error: dict[str, str],
                      result: JsonObject, actor: str, caused_by: str | None = None,
                      deployment: str | None = None, job: str | None = None,
                      index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=FAILED, error=error)

    @event("JobStopped")
    def _job_stopped(self, task_id: str, instance_id: str, instance: str, result: JsonObject,
                     actor: str, caused_by: str | None = None,
                     deployment: str | None = None, job: str | None = None,
                     index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=SNAPSHOTTING)

    @event("StopFailed")
    def _stop_failed(self, task_id: str, instance_id: str, instance: str, error: dict[str, str],
                     result: JsonObject, actor: str, caused_by: str | None = None,
                     deployment: str | None = None, job: str | None = None,
                     index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=FAILED, error=error)

    @event("CleanSnapshotsRequested")
    def _snapshots_requested(self, task_id: str, instance_id: str, instance: str, snapshots: list[str],
                             disks: list[str], actor: str, caused_by: str | None = None,
                             deployment: str | None = None, job: str | None = None,
                             index: int | None = None) -> None:
        self._set(instance_id, snapshots=list(snapshots))

    @event("SnapshotSkipped")
    def _snapshot_skipped(self, task_id: str, instance_id: str, instance: str, reason: str, actor: str,
                          caused_by: str | None = None,
                          deployment: str | None = None, job: str | None = None,
                          index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id)

    @event("SnapshotFailed")
    def _snapshot_failed(self, task_id: str, instance_id: str, instance: str, failures: list[JsonObject],
                         actor: str, caused_by: str | None = None,
                         deployment: str | None = None, job: str | None = None,
                         index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=FAILED, error={"type": "SnapshotFailed", "message": "; ".join(
            f"disk {f.get('disk_cid')}: {f.get('error_type', f.get('outcome'))}: {f.get('message', '')}"
            for f in failures)})

    @event("ReadyForUpdate")
    def _ready(self, task_id: str, instance_id: str, instance: str, snapshots: list[JsonObject],
               actor: str, caused_by: str | None = None,
               deployment: str | None = None, job: str | None = None,
               index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=READY)

    @event("InstancesCancelled")
    def _cancelled(self, task_id: str, instance_ids: list[str], instances: list[str], reason: str,
                   actor: str, caused_by: str | None = None,
                   deployment: str | None = None, job: str | None = None,
                   index: int | None = None, disks: list[str] | None = None) -> None:
        for instance_id in instance_ids:
            self._set(instance_id, state=CANCELLED)

    @event("WorkerLost")
    def _worker_lost(self, task_id: str, instance_id: str, instance: str, step: str, worker: str,
                     error: dict[str, str], actor: str, caused_by: str | None = None,
                     deployment: str | None = None, job: str | None = None,
                     index: int | None = None, disks: list[str] | None = None) -> None:
        # The worker holding the drain or stop died (found by the recovery sweep).
        self._set(instance_id, state=FAILED, error=error)

    # eventsourcing's Aggregate.trigger_event takes the event's attributes as `**kwargs: Any`.
    def trigger_event(self, event_class: type[CanMutateAggregate[UUID]], **kwargs: Any) -> None:
        # Every instance event carries the references the audit filters by
        # (deployment, job, index, instance id, disks), so `audit -d/--job/
        # --index/--disk` finds the whole update, not only its announcement.
        # Stamped here, where every event passes, so no step can forget them.
        if event_class.__name__ in REFERENCED_EVENTS:
            refs = self._references(kwargs.get("instance_id"))
            kwargs.update({k: v for k, v in refs.items() if k in kwargs and kwargs[k] is None})
        super().trigger_event(event_class, **kwargs)

    def _references(self, instance_id: str | None) -> dict[str, object]:
        refs: dict[str, object] = {"deployment": self.deployment, "job": self.job}
        if instance_id is not None:
            inst = self.instance(instance_id)
            refs.update(job=inst["job"], index=inst["index"], disks=list(inst["disks"]))
        return refs

    def _set(self, instance_id: str, state: str | None = None, worker: str | None = None,
             snapshots: list[str] | None = None, error: dict[str, str] | None = None) -> None:
        # Called from event bodies, before the aggregate's version moves on to
        # the event's own: the event being applied is version + 1.
        inst = self.instance(instance_id)
        if state is not None:
            inst["state"] = state
        if worker is not None:
            inst["worker"] = worker
        if snapshots is not None:
            inst["snapshots"] = snapshots
        if error is not None:
            inst["error"] = error
        inst["cause"] = f"{self.id}/{self.version + 1}"

    # Queries -------------------------------------------------------------------

    def instance(self, instance_id: str) -> UpdateInstance:
        for inst in self.instances:
            if inst["id"] == instance_id:
                return inst
        raise KeyError(instance_id)

    def cause_of(self, instance_id: str) -> str | None:
        """The id of the instance's latest event: what its next event follows from."""
        return self.instance(instance_id)["cause"]

    def next_startable(self) -> UpdateInstance | None:
        """The next instance in order, if the update may start one more now."""
        if any(i["state"] in (FAILED, CANCELLED) for i in self.instances):
            return None  # like a deploy: stop at the first failure
        if sum(1 for i in self.instances if i["state"] in IN_FLIGHT) >= self.max_in_flight:
            return None
        return next((i for i in self.instances if i["state"] == WAITING), None)

    # Commands ------------------------------------------------------------------

    def _expect(self, instance_id: str, *states: str) -> UpdateInstance:
        inst = self.instance(instance_id)
        if inst["state"] not in states:
            raise InvalidState(f"instance {label_of(inst)} of job update {self.task_id} is {inst['state']}, "
                               f"not {' or '.join(states)}")
        return inst

    def start_drain(self, instance_id: str, worker: str, actor: str) -> None:
        inst = self._expect(instance_id, WAITING)
        self._drain_started(task_id=self.task_id, instance_id=instance_id, instance=label_of(inst), worker=worker,
                            drain_type=self.drain_type, jobs=list(inst["jobs"]), actor=actor,
                            caused_by=self.cause_of(instance_id))

    def record_step(self, instance_id: str, step: str, result: AgentResult, actor: str) -> dict[str, str] | None:
        """A drain's or stop's outcome (`step`: "drain" or "stop"); returns the
        error that failed the instance, or None when the step succeeded."""
        inst = self._expect(instance_id, DRAINING if step == "drain" else STOPPING)
        label, cause = label_of(inst), self.cause_of(instance_id)
        if not result.ok:
            error = result.error or {"type": AGENT_ERROR, "message": "failed"}
            (self._drain_failed if step == "drain" else self._stop_failed)(
                task_id=self.task_id, instance_id=instance_id, instance=label, error=error,
                result=result.as_dict(), actor=actor, caused_by=cause)
            return error
        (self._drain_completed if step == "drain" else self._job_stopped)(
            task_id=self.task_id, instance_id=instance_id, instance=label, result=result.as_dict(),
            actor=actor, caused_by=cause)
        return None

    def request_clean_snapshots(self, instance_id: str, snapshot_ids: list[str], actor: str) -> None:
        inst = self._expect(instance_id, SNAPSHOTTING)
        self._snapshots_requested(task_id=self.task_id, instance_id=instance_id, instance=label_of(inst),
                                  snapshots=list(snapshot_ids), disks=list(inst["disks"]), actor=actor,
                                  caused_by=self.cause_of(instance_id))

    def skip_snapshots(self, instance_id: str, reason: str, actor: str) -> None:
        inst = self._expect(instance_id, SNAPSHOTTING)
        self._snapshot_skipped(task_id=self.task_id, instance_id=instance_id, instance=label_of(inst),
                               reason=reason, actor=actor, caused_by=self.cause_of(instance_id))

    def fail_snapshots(self, instance_id: str, failures: list[JsonObject], actor: str) -> dict[str, str]:
        """Its clean snapshots failed (follows from the first failure); returns the instance's error."""
        inst = self._expect(instance_id, SNAPSHOTTING)
        self._snapshot_failed(task_id=self.task_id, instance_id=instance_id, instance=label_of(inst),
                              failures=failures, actor=actor, caused_by=_str_or_none(failures[0].get("caused_by")))
        return inst["error"]

    def ready(self, instance_id: str, snapshots: list[JsonObject], actor: str, caused_by: str | None) -> None:
        inst = self._expect(instance_id, SNAPSHOTTING)
        self._ready(task_id=self.task_id, instance_id=instance_id, instance=label_of(inst), snapshots=snapshots,
                    actor=actor, caused_by=caused_by)

    def cancel_waiting(self, reason: str, actor: str, caused_by: str | None) -> list[UpdateInstance]:
        waiting = [i for i in self.instances if i["state"] == WAITING]
        if waiting:
            self._cancelled(task_id=self.task_id, instance_ids=[i["id"] for i in waiting],
                            instances=[label_of(i) for i in waiting], reason=reason, actor=actor,
                            caused_by=caused_by)
        return waiting

    def worker_lost(self, instance_id: str, dead_worker: str, actor: str) -> dict[str, str] | None:
        """Fail an instance whose drain or stop is held by a worker that died; returns
        the error, or None when the instance is not (or no longer) that worker's."""
        inst = self.instance(instance_id)
        if inst["state"] not in CLAIMED_STATES or inst["worker"] != dead_worker:
            return None
        step = "drain" if inst["state"] == DRAINING else "stop"
        label = label_of(inst)
        error = {"type": WORKER_LOST, "message": f"worker {dead_worker} stopped beating during the {step} of "
                 f"{label}; the {step} is not run again (its jobs may be drained or stopped) and no clean "
                 "snapshot was taken"}
        self._worker_lost(task_id=self.task_id, instance_id=instance_id, instance=label, step=step,
                          worker=dead_worker, error=error, actor=actor, caused_by=self.cause_of(instance_id))
        return error


# Version 2 of the instance events added their references (deployment, job,
# index, disks). A version-1 event reads with what it says itself: job and
# index from its instance label; deployment and disks None (the audit view
# takes those from the update's announcement).
REFERENCED_EVENTS = ("DrainStarted", "DrainCompleted", "DrainFailed", "JobStopped", "StopFailed",
                     "CleanSnapshotsRequested", "SnapshotSkipped", "SnapshotFailed", "ReadyForUpdate",
                     "InstancesCancelled", "WorkerLost")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _upcast_references_v1_v2(state: JsonObject) -> None:
    job, _, index = str(state.get("instance") or "").partition("/")
    state.setdefault("deployment", None)
    state.setdefault("job", job or None)
    state.setdefault("index", int(index) if index.isdigit() else None)
    if "disks" not in state:
        state["disks"] = None


for _name in REFERENCED_EVENTS:
    _event_class = getattr(JobUpdate, _name)
    _event_class.class_version = 2
    _event_class.upcast_v1_v2 = staticmethod(_upcast_references_v1_v2)
