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

from typing import Any, Callable
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from .agent import AGENT_ERROR, DRAIN_TYPES, WORKER_LOST, Agent, AgentInstance, AgentResult, drain_states
from .application import Ledger
from .deployment import Deployment
from .errors import LedgerError
from .ownership import JobOwnedElsewhere
from .snapshot import Snapshot
from .task import Task

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


def _label(inst: dict[str, Any]) -> str:
    return f"{inst['job']}/{inst['index'] if inst.get('index') is not None else inst['id']}"


class JobUpdate(Aggregate):
    @staticmethod
    def create_id(task_id: str) -> UUID:
        return job_update_id(task_id)

    @event("Announced")
    def __init__(self, task_id: str, deployment: str, job: str, index_or_id: str | None,
                 instances: list[dict[str, Any]], drain_type: str, current_state: dict[str, Any],
                 next_state: dict[str, Any], max_in_flight: int, actor: str) -> None:
        self.task_id = task_id
        self.deployment = deployment
        self.job = job
        self.drain_type = drain_type
        self.current_state = dict(current_state)
        self.next_state = dict(next_state)
        self.max_in_flight = max_in_flight
        # `cause`: the instance's latest event, what its next one follows from (the announcement first).
        self.instances = [{**dict(i), "state": WAITING, "worker": None, "snapshots": [],
                           "cause": f"{self.id}/{self.version}"} for i in instances]

    # Events: each names the instance, so the task log reads on its own. `caused_by`
    # defaults to None: events recorded before causation existed have none.

    @event("DrainStarted")
    def _drain_started(self, task_id: str, instance_id: str, instance: str, worker: str, drain_type: str,
                       jobs: list[str], actor: str, caused_by: str | None = None,
                       deployment: str | None = None, job: str | None = None,
                       index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=DRAINING, worker=worker)

    @event("DrainCompleted")
    def _drain_completed(self, task_id: str, instance_id: str, instance: str, result: dict[str, Any],
                         actor: str, caused_by: str | None = None,
                         deployment: str | None = None, job: str | None = None,
                         index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=STOPPING)

    @event("DrainFailed")
    def _drain_failed(self, task_id: str, instance_id: str, instance: str, error: dict[str, Any],
                      result: dict[str, Any], actor: str, caused_by: str | None = None,
                      deployment: str | None = None, job: str | None = None,
                      index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=FAILED, error=error)

    @event("JobStopped")
    def _job_stopped(self, task_id: str, instance_id: str, instance: str, result: dict[str, Any],
                     actor: str, caused_by: str | None = None,
                     deployment: str | None = None, job: str | None = None,
                     index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=SNAPSHOTTING)

    @event("StopFailed")
    def _stop_failed(self, task_id: str, instance_id: str, instance: str, error: dict[str, Any],
                     result: dict[str, Any], actor: str, caused_by: str | None = None,
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
    def _snapshot_failed(self, task_id: str, instance_id: str, instance: str, failures: list[dict[str, Any]],
                         actor: str, caused_by: str | None = None,
                         deployment: str | None = None, job: str | None = None,
                         index: int | None = None, disks: list[str] | None = None) -> None:
        self._set(instance_id, state=FAILED, error={"type": "SnapshotFailed", "message": "; ".join(
            f"disk {f.get('disk_cid')}: {f.get('error_type', f.get('outcome'))}: {f.get('message', '')}"
            for f in failures)})

    @event("ReadyForUpdate")
    def _ready(self, task_id: str, instance_id: str, instance: str, snapshots: list[dict[str, Any]],
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
                     error: dict[str, Any], actor: str, caused_by: str | None = None,
                     deployment: str | None = None, job: str | None = None,
                     index: int | None = None, disks: list[str] | None = None) -> None:
        # The worker holding the drain or stop died (found by the recovery sweep).
        self._set(instance_id, state=FAILED, error=error)

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        # Every instance event carries the references the audit filters by
        # (deployment, job, index, instance id, disks), so `audit -d/--job/
        # --index/--disk` finds the whole update, not only its announcement.
        # Stamped here, where every event passes, so no step can forget them.
        if event_class.__name__ in REFERENCED_EVENTS:
            refs = self._references(kwargs.get("instance_id"))
            kwargs.update({k: v for k, v in refs.items() if k in kwargs and kwargs[k] is None})
        super().trigger_event(event_class, **kwargs)

    def _references(self, instance_id: str | None) -> dict[str, Any]:
        refs: dict[str, Any] = {"deployment": self.deployment, "job": self.job}
        if instance_id is not None:
            inst = self.instance(instance_id)
            refs.update(job=inst["job"], index=inst["index"], disks=list(inst["disks"]))
        return refs

    def _set(self, instance_id: str, **changes: Any) -> None:
        # Called from event bodies, before the aggregate's version moves on to
        # the event's own: the event being applied is version + 1.
        self.instance(instance_id).update(changes, cause=f"{self.id}/{self.version + 1}")

    # Queries -------------------------------------------------------------------

    def instance(self, instance_id: str) -> dict[str, Any]:
        for inst in self.instances:
            if inst["id"] == instance_id:
                return inst
        raise KeyError(instance_id)

    def cause_of(self, instance_id: str) -> str | None:
        """The id of the instance's latest event: what its next event follows from."""
        return self.instance(instance_id).get("cause")

    def next_startable(self) -> dict[str, Any] | None:
        """The next instance in order, if the update may start one more now."""
        if any(i["state"] in (FAILED, CANCELLED) for i in self.instances):
            return None  # like a deploy: stop at the first failure
        if sum(1 for i in self.instances if i["state"] in IN_FLIGHT) >= self.max_in_flight:
            return None
        return next((i for i in self.instances if i["state"] == WAITING), None)

    # Commands ------------------------------------------------------------------

    def start_drain(self, instance_id: str, worker: str, actor: str) -> None:
        inst = self.instance(instance_id)
        self._drain_started(task_id=self.task_id, instance_id=instance_id, instance=_label(inst), worker=worker,
                            drain_type=self.drain_type, jobs=list(inst["jobs"]), actor=actor,
                            caused_by=self.cause_of(instance_id))

    def cancel_waiting(self, reason: str, actor: str, caused_by: str | None) -> list[dict[str, Any]]:
        waiting = [i for i in self.instances if i["state"] == WAITING]
        if waiting:
            self._cancelled(task_id=self.task_id, instance_ids=[i["id"] for i in waiting],
                            instances=[_label(i) for i in waiting], reason=reason, actor=actor,
                            caused_by=caused_by)
        return waiting

    def worker_lost(self, instance_id: str, dead_worker: str, actor: str) -> dict[str, Any] | None:
        """Fail an instance whose drain or stop is held by a worker that died; returns
        the error, or None when the instance is not (or no longer) that worker's."""
        inst = self.instance(instance_id)
        if inst["state"] not in CLAIMED_STATES or inst["worker"] != dead_worker:
            return None
        step = "drain" if inst["state"] == DRAINING else "stop"
        label = _label(inst)
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


def _upcast_references_v1_v2(state: dict[str, Any]) -> None:
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


# The service-layer command -------------------------------------------------------

def _state(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if value is not None else None


def announce_job_update(ledger: Ledger, deployment: str, job: str, index_or_id: str | None, drain_type: str,
                        actor: str, next_state: dict[str, Any] | None = None,
                        current_state: dict[str, Any] | None = None, max_in_flight: int = 1) -> Task:
    """Accept a job update: one task, one JobUpdate, durable together before the answer."""
    if drain_type not in DRAIN_TYPES:
        raise LedgerError(f"drain_type must be one of {', '.join(DRAIN_TYPES)}", field="drain_type")
    if max_in_flight < 1:
        raise LedgerError("max_in_flight must be at least 1", field="max_in_flight")
    dep = ledger.get_deployment(deployment)
    instances = dep.find_instances(job, index_or_id)
    nxt, cur = _state(next_state), _state(current_state)
    task_id = uuid4()
    planned = [{"id": i["id"], "job": i["job"], "index": i["index"], "disks": list(i["disks"]),
                "jobs": list(i.get("jobs") or [i["job"]]),
                **{k: i[k] for k in ("agent_id", "persistent_disk") if i.get(k) is not None},
                **drain_states(i, cur, nxt),
                "operation_id": instance_operation_id(task_id, i["id"])} for i in instances]
    # A release job another deployment owns: its scripts are not this deployment's to run (issue 16, item 4).
    foreign = ledger.foreign_jobs(deployment, {j for p in planned for j in p["jobs"]})
    if foreign:
        raise JobOwnedElsewhere(foreign, field="jobs")
    single = index_or_id is not None
    description = f"update instance {_label(planned[0])}" if single else f"update job {job}"
    task = Task(id=task_id, kind=KIND, description=description, deployment=deployment,
                operations=[p["operation_id"] for p in planned], actor=actor, trigger=TRIGGER,
                context={"job": job, "index_or_id": index_or_id, "drain_type": drain_type,
                         "max_in_flight": max_in_flight})
    # The update-level states are what was announced (`{}`: nothing); each instance has its own.
    update = JobUpdate(task_id=str(task_id), deployment=deployment, job=job, index_or_id=index_or_id,
                       instances=planned, drain_type=drain_type, current_state=cur or {}, next_state=nxt or {},
                       max_in_flight=max_in_flight, actor=actor)
    ledger.save(task, update)
    return task


# Execution ---------------------------------------------------------------------------

class JobUpdateRunner:
    """Runs the steps of job updates; safe with any number of workers.

    `advance` settles instances whose snapshots all have outcomes and claims
    the instances that may start now (a `DrainStarted` appended under
    optimistic concurrency: a worker that loses the race simply sees the
    instance taken). `execute` runs one claimed instance's drain and stop
    (outside any transaction) and records each outcome; the clean snapshots it
    requests are executed by the ordinary snapshot worker. `recover` fails an
    instance whose worker died during its drain or stop.
    """

    def __init__(self, ledger: Ledger, agent: Agent, worker: str, log: Any = None) -> None:
        self.ledger = ledger
        self.agent = agent
        self.worker = worker
        self.log = log
        # (update id, instance id) this process runs now, from the claim on (the
        # recovery sweep never takes these for abandoned).
        self.running: set[tuple[UUID, str]] = set()

    def _update(self, update_id: UUID) -> JobUpdate | None:
        found = self.ledger._get(update_id)
        return found if isinstance(found, JobUpdate) else None

    def is_job_update_task(self, task_id: str) -> bool:
        return self.ledger.created_with_seen(job_update_id(task_id))

    # Advance -------------------------------------------------------------------------

    def advance(self, update_id: UUID) -> list[str]:
        """Settle finished snapshot steps, then claim what may start; returns the
        ids of the instances this worker claimed (to `execute`)."""
        self.ledger.save_with_retry(lambda: self._settle(update_id))
        claimed: list[str] = []
        while True:
            picked: list[str] = []

            def claim() -> list[Aggregate]:
                picked.clear()
                update = self._update(update_id)
                inst = update.next_startable() if update is not None else None
                if inst is None:
                    return []
                task = self.ledger.get_task(update.task_id)
                update.start_drain(inst["id"], worker=self.worker, actor=task.actor)
                task.start(worker=self.worker, actor=task.actor)
                picked.append(inst["id"])
                return [update, task]

            self.ledger.save_with_retry(claim)
            if not picked:
                return claimed
            claimed.append(picked[0])

    def _settle(self, update_id: UUID) -> list[Aggregate]:
        update = self._update(update_id)
        if update is None:
            return []
        task = self.ledger.get_task(update.task_id)
        changed = False
        for inst in update.instances:
            if inst["state"] != SNAPSHOTTING or not inst["snapshots"]:
                continue
            outcomes = [task.outcomes.get(s) for s in inst["snapshots"]]
            if not all(outcomes):
                continue
            changed = True
            failures = [o for o in outcomes if o["outcome"] not in SNAPSHOT_OK]
            if failures:
                update._snapshot_failed(task_id=update.task_id, instance_id=inst["id"], instance=_label(inst),
                                        failures=failures, actor=task.actor, caused_by=failures[0].get("caused_by"))
                self._fail_rest(update, task, inst, update.instance(inst["id"])["error"])
            else:
                snapshots = [{"disk_cid": o.get("disk_cid"), "snapshot_cid": o.get("snapshot_cid"),
                              "outcome": o["outcome"], **({"reason": o["reason"]} if o.get("reason") else {})}
                             for o in outcomes]
                # Ready follows from the last of its snapshots to finish.
                last = [o for op, o in task.outcomes.items() if op in inst["snapshots"]][-1]
                self._ready(update, task, inst, snapshots, caused_by=last.get("caused_by"))
        return [update, task] if changed else []

    def _ready(self, update: JobUpdate, task: Task, inst: dict[str, Any], snapshots: list[dict[str, Any]],
               caused_by: str | None) -> None:
        update._ready(task_id=update.task_id, instance_id=inst["id"], instance=_label(inst), snapshots=snapshots,
                      actor=task.actor, caused_by=caused_by)
        task.operation_finished(inst["operation_id"], READY, {
            "instance": _label(inst), "instance_id": inst["id"], "disk_cid": None, "snapshot_cid": None,
            "reason": "ready for update", "caused_by": update.cause_of(inst["id"])}, actor=task.actor)

    def _fail_rest(self, update: JobUpdate, task: Task, inst: dict[str, Any], error: dict[str, Any]) -> None:
        """The failed instance's outcome, and every instance not started yet is cancelled
        (both follow from the failure, the instance's latest event)."""
        failure = update.cause_of(inst["id"])
        task.operation_finished(inst["operation_id"], FAILED, {
            "instance": _label(inst), "instance_id": inst["id"], "disk_cid": None, "snapshot_cid": None,
            "error_type": error["type"], "message": error["message"], "caused_by": failure}, actor=task.actor)
        reason = f"instance {_label(inst)} failed; the update does not go on"
        for waiting in update.cancel_waiting(reason, actor=task.actor, caused_by=failure):
            task.operation_finished(waiting["operation_id"], CANCELLED, {
                "instance": _label(waiting), "instance_id": waiting["id"], "disk_cid": None, "snapshot_cid": None,
                "error_type": "Cancelled", "message": reason, "caused_by": update.cause_of(waiting["id"])},
                actor=task.actor)

    # Execute one claimed instance -----------------------------------------------------------

    def execute(self, update_id: UUID, instance_id: str) -> str | None:
        """Drain, stop, then request the clean snapshots (or skip them). Returns
        the instance's state afterwards, or None if it was not ours to run."""
        self.running.add((update_id, instance_id))
        try:
            return self._drain_and_stop(update_id, instance_id)
        finally:
            self.running.discard((update_id, instance_id))

    def _drain_and_stop(self, update_id: UUID, instance_id: str) -> str | None:
        update = self._update(update_id)
        if update is None:
            return None
        inst = update.instance(instance_id)
        if inst["state"] != DRAINING or inst["worker"] != self.worker:
            return None
        target = AgentInstance(deployment=update.deployment, job=inst["job"], index=inst["index"], id=inst["id"],
                               jobs=tuple(inst["jobs"]))
        # Updates announced before instances carried their own states used the update's.
        current = inst.get("current_state", update.current_state)
        nxt = inst.get("next_state", update.next_state)
        drained = self._call(lambda: self.agent.drain(target, update.drain_type, current, nxt), target)
        self._log("drain", target, drained)
        if not self._record(update_id, instance_id, DRAINING, "drain", drained):
            return FAILED
        stopped = self._call(lambda: self.agent.stop(target), target)
        self._log("stop", target, stopped)
        if not self._record(update_id, instance_id, STOPPING, "stop", stopped):
            return FAILED
        update = self._update(update_id)
        return update.instance(instance_id)["state"] if update is not None else None

    @staticmethod
    def _call(step: Callable[[], AgentResult], target: AgentInstance) -> AgentResult:
        try:
            return step()
        except Exception as error:  # the adapter broke: a failed step, recorded, never lost
            return AgentResult.failure(target.jobs, AGENT_ERROR, f"{type(error).__name__}: {error}")

    def _record(self, update_id: UUID, instance_id: str, expected: str, step: str, result: AgentResult) -> bool:
        """Record a step's outcome; after a successful stop, in the same save,
        the clean snapshot requests (or the skip and readiness)."""
        def decide() -> list[Aggregate]:
            update = self._update(update_id)
            assert update is not None
            inst = update.instance(instance_id)
            if inst["state"] != expected or inst["worker"] != self.worker:
                return []
            task = self.ledger.get_task(update.task_id)
            label, data = _label(inst), result.as_dict()
            if not result.ok:
                error = result.error or {"type": AGENT_ERROR, "message": "failed"}
                failed = update._drain_failed if step == "drain" else update._stop_failed
                failed(task_id=update.task_id, instance_id=instance_id, instance=label, error=error, result=data,
                       actor=task.actor, caused_by=update.cause_of(instance_id))
                self._fail_rest(update, task, inst, error)
                return [update, task]
            if step == "drain":
                update._drain_completed(task_id=update.task_id, instance_id=instance_id, instance=label,
                                        result=data, actor=task.actor, caused_by=update.cause_of(instance_id))
                return [update]
            update._job_stopped(task_id=update.task_id, instance_id=instance_id, instance=label, result=data,
                                actor=task.actor, caused_by=update.cause_of(instance_id))
            return [update, task, *self._clean_snapshots(update, task, inst)]

        saved = self.ledger.save_with_retry(decide)
        return bool(saved) and result.ok

    def _clean_snapshots(self, update: JobUpdate, task: Task, inst: dict[str, Any]) -> list[Snapshot]:
        label = _label(inst)
        if not self.ledger.snapshots_enabled():
            reason = "snapshots are disabled"
        elif not inst["disks"]:
            reason = "no persistent disks"
        else:
            reason = ""
        if reason:
            update._snapshot_skipped(task_id=update.task_id, instance_id=inst["id"], instance=label, reason=reason,
                                     actor=task.actor, caused_by=update.cause_of(inst["id"]))
            self._ready(update, task, inst, [], caused_by=update.cause_of(inst["id"]))
            return []
        dep: Deployment = self.ledger.get_deployment_or_history(update.deployment)
        snapshots = [self.ledger._new_snapshot(UUID(update.task_id), dep, inst, disk, TRIGGER, True, task.actor)
                     for disk in inst["disks"]]
        ids = [str(s.id) for s in snapshots]
        update._snapshots_requested(task_id=update.task_id, instance_id=inst["id"], instance=label, snapshots=ids,
                                    disks=list(inst["disks"]), actor=task.actor, caused_by=update.cause_of(inst["id"]))
        task.add_operations(ids, actor=task.actor)
        return snapshots

    # Recovery: the worker holding a drain or stop died -------------------------------------------

    def recover(self, update_id: UUID, instance_id: str, dead_worker: str) -> str | None:
        """Fail an instance whose drain or stop was held by `dead_worker` (found
        silent by the recovery sweep), exactly like a failed step: its outcome on
        the task, the instances not started yet cancelled. The drain is not run
        again (not obviously safe). Returns `failed`, or None when the instance
        was no longer that worker's (it finished, or another recovery won)."""
        lost: list[dict[str, Any]] = []

        def decide() -> list[Aggregate]:
            lost.clear()
            update = self._update(update_id)
            if update is None:
                return []
            task = self.ledger.get_task(update.task_id)
            error = update.worker_lost(instance_id, dead_worker, actor=self.worker)
            if error is None:
                return []
            self._fail_rest(update, task, update.instance(instance_id), error)
            lost.append(error)
            return [update, task]

        self.ledger.save_with_retry(decide)
        return FAILED if lost else None

    def _log(self, step: str, target: AgentInstance, result: AgentResult) -> None:
        if self.log is not None:
            # A failed drain or stop fails the instance: a warning, with where it happened.
            emit = self.log.info if result.ok else self.log.warning
            emit(f"job {step}", instance=target.label, instance_id=target.id, jobs=list(target.jobs),
                 deployment=target.deployment, ok=result.ok, duration_s=round(result.duration_s, 3), error=result.error)
