"""Job updates: accept an announcement (drain -> stop -> clean snapshot -> ready, per instance)."""

from __future__ import annotations

from uuid import UUID, uuid4

from ..agent import DRAIN_TYPES, drain_states
from ..deployment import InventoryInstance
from ..errors import LedgerError
from ..idempotency import Idempotency
from ..job_update import KIND, TRIGGER, JobUpdate, PlannedInstance, instance_operation_id, label_of
from ..json_types import JsonMapping, JsonObject
from ..ownership import JobOwnedElsewhere
from ..task import Task
from .base import LedgerStore
from .deployments import DeploymentService


def _state(value: JsonMapping | None) -> JsonObject | None:
    return dict(value) if value is not None else None


def _planned(task_id: UUID, inst: InventoryInstance, cur: JsonObject | None, nxt: JsonObject | None
             ) -> PlannedInstance:
    current_state, next_state = drain_states(inst, cur, nxt)
    planned = PlannedInstance(id=inst["id"], job=inst["job"], index=inst["index"], disks=list(inst["disks"]),
                              jobs=list(inst.get("jobs") or [inst["job"]]), current_state=current_state,
                              next_state=next_state, operation_id=instance_operation_id(task_id, inst["id"]))
    # The optional facts only when known, as the inventory holds them.
    if "agent_id" in inst:
        planned["agent_id"] = inst["agent_id"]
    if "persistent_disk" in inst:
        planned["persistent_disk"] = inst["persistent_disk"]
    return planned


class JobUpdateService:
    def __init__(self, store: LedgerStore, deployments: DeploymentService) -> None:
        self.store = store
        self.deployments = deployments

    def announce(self, deployment: str, job: str, index_or_id: str | None, drain_type: str, actor: str,
                 next_state: JsonMapping | None = None, current_state: JsonMapping | None = None,
                 max_in_flight: int = 1, idempotency: Idempotency | None = None) -> Task:
        """Accept a job update: one task, one JobUpdate, durable together before the answer."""
        if drain_type not in DRAIN_TYPES:
            raise LedgerError(f"drain_type must be one of {', '.join(DRAIN_TYPES)}", field="drain_type")
        if max_in_flight < 1:
            raise LedgerError("max_in_flight must be at least 1", field="max_in_flight")
        dep = self.deployments.get(deployment)
        instances = dep.find_instances(job, index_or_id)
        nxt, cur = _state(next_state), _state(current_state)
        task_id = uuid4()
        planned = [_planned(task_id, i, cur, nxt) for i in instances]
        # A release job another deployment owns: its scripts are not this deployment's to run (issue 16, item 4).
        foreign = self.deployments.foreign_jobs(deployment, {j for p in planned for j in p["jobs"]})
        if foreign:
            raise JobOwnedElsewhere(foreign, field="jobs")
        single = index_or_id is not None
        description = f"update instance {label_of(planned[0])}" if single else f"update job {job}"
        task = Task(id=task_id, kind=KIND, description=description, deployment=deployment,  # type: ignore[call-arg]
                    operations=[p["operation_id"] for p in planned], actor=actor, trigger=TRIGGER,
                    context={"job": job, "index_or_id": index_or_id, "drain_type": drain_type,
                             "max_in_flight": max_in_flight})
        # The update-level states are what was announced (`{}`: nothing); each instance has its own.
        update = JobUpdate(task_id=str(task_id), deployment=deployment, job=job, index_or_id=index_or_id,
                           instances=planned, drain_type=drain_type, current_state=cur or {}, next_state=nxt or {},
                           max_in_flight=max_in_flight, actor=actor)
        self.store.save(task, update, idempotency=idempotency)
        return task

    def get(self, update_id: UUID) -> JobUpdate | None:
        found = self.store.load(update_id)
        return found if isinstance(found, JobUpdate) else None
