"""Recording CPI call outcomes on their snapshots and tasks (the third step of domain/operations.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .combining import Combiner
from .snapshot import DELETING, IN_DOUBT, TAKING, Snapshot
from .task import GOOD_OUTCOMES, Task

if TYPE_CHECKING:
    from .application import Ledger


class OutcomeRecorder:
    """`persist(decide)`: the save that survives a database outage (only this process knows the outcome)."""

    def __init__(self, ledger: Ledger, persist: Callable[[Callable[[], list[Any]]], Any]) -> None:
        self.ledger = ledger
        self.persist = persist
        self._combined: Combiner[tuple[Snapshot, str, dict[str, Any]]] = Combiner()

    def record(self, snapshot: Snapshot, outcome: str, record: dict[str, Any]) -> None:
        """Record a CPI call's outcome and the task's progress in one transaction.

        Outcomes of one task that arrive together are saved together
        (domain/combining.py): its snapshots all append to the task, and
        separate saves would conflict on it and retry."""
        self._combined.submit(snapshot.current_task_id, (snapshot, outcome, record), self._save_outcomes)

    def _save_outcomes(self, outcomes: list[tuple[Snapshot, str, dict[str, Any]]]) -> None:
        # First round: the snapshots as this worker last saved them (its claim),
        # without reading them again, and the CIDs taken for new (a CID the
        # ledger already holds conflicts on its SnapshotCid index). A conflict,
        # or any failed round, and every later round reads everything afresh.
        rounds = 0

        def decide() -> list[Any]:
            nonlocal rounds
            rounds += 1
            fresh = rounds > 1
            changed: list[Any] = []
            tasks: dict[str, Task] = {}
            for claimed, outcome, record in outcomes:
                snapshot = self.ledger.snapshots.get(claimed.id) if fresh else claimed
                if snapshot.state not in (TAKING, DELETING, IN_DOUBT):
                    continue  # recorded already (a retried save that did commit)
                task_id = snapshot.current_task_id
                if task_id not in tasks:
                    tasks[task_id] = self.ledger.tasks.get(task_id)
                task = tasks[task_id]
                changed += [snapshot, *self._apply(snapshot, outcome, record, task.actor, changed, check_cid=fresh)]
                task.operation_finished(snapshot.id, snapshot_outcome(outcome, snapshot),
                                        self._outcome_detail(snapshot, outcome, record), actor=task.actor)
            return [*changed, *tasks.values()] if changed else []

        self.persist(decide)

    @staticmethod
    def _outcome_detail(snapshot: Snapshot, outcome: str, record: dict[str, Any]) -> dict[str, Any]:
        task_outcome = snapshot_outcome(outcome, snapshot)
        detail: dict[str, Any] = {
            "instance": snapshot.instance_label,
            "disk_cid": snapshot.disk_cid,
            "snapshot_cid": snapshot.snapshot_cid or record.get("snapshot_cid"),
        }
        if "reason" in record:
            detail["reason"] = record["reason"]
        if "error" in record and task_outcome not in GOOD_OUTCOMES:
            detail.update(error_type=record["error"]["type"], message=record["error"]["message"])
        if record.get("attempts", 1) > 1:
            detail["attempts"] = record["attempts"]
        detail["caused_by"] = snapshot.cause  # the outcome event just recorded
        return detail

    def _apply(self, snapshot: Snapshot, outcome: str, record: dict[str, Any], actor: str,
               saving: Sequence[Any] = (), check_cid: bool = True) -> list[Any]:
        """Apply an outcome to its snapshot; returns what else must be saved with it.
        `saving`: what the same save already holds (a CID claimed earlier in it).
        `check_cid=False`: leave a CID the ledger already holds to the index's conflict."""
        call = {k: v for k, v in record.items() if k not in ("snapshot_cid", "reason")}
        if outcome == "taken":
            cid = record["snapshot_cid"]
            index = self.ledger.snapshots.new_cid_index(cid, snapshot.id)
            if ((check_cid and self.ledger.snapshots.cid_taken(cid))
                    or any(getattr(o, "id", None) == index.id for o in saving)):
                error = {"type": "Snapledger::DuplicateSnapshotCid", "ok_to_retry": False,
                         "message": f"the CPI returned snapshot CID '{cid}', which the ledger already holds"}
                record["error"] = error
                snapshot.record_failed(error=error, call=call, actor=actor)
                return []
            snapshot.record_taken(snapshot_cid=cid, call=call, actor=actor)
            return [index]
        if outcome == "skipped":
            snapshot.record_skipped(reason=record["reason"], call=call, actor=actor)
        elif outcome == "deleted":
            snapshot.record_deleted(reason=record["reason"], call=call, actor=actor)
        elif outcome == "cancelled":
            snapshot.record_cancelled(reason=record["reason"], actor=actor)
        else:
            snapshot.record_failed(error=record["error"], call=call, actor=actor)
        return []


def snapshot_outcome(outcome: str, snapshot: Snapshot) -> str:
    """The task-level outcome: a failed deletion is `deletion_failed`, a duplicate CID `failed`."""
    if outcome == "taken" and snapshot.state == "failed":
        return "failed"
    if outcome == "failed" and snapshot.deletion_task_id and snapshot.state == "taken":
        return "deletion_failed"
    return outcome
