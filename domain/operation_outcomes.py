"""Recording CPI call outcomes on their snapshots (the third step of domain/operations.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventsourcing.domain import Aggregate

from .json_types import JsonObject, json_object
from .snapshot import DELETING, IN_DOUBT, TAKING, Snapshot

if TYPE_CHECKING:
    from .application import Ledger
    from .services.base import Persist


class OutcomeRecorder:
    """`persist(decide)`: the save that survives a database outage (only this process knows the outcome)."""

    def __init__(self, ledger: Ledger, persist: Persist) -> None:
        self.ledger = ledger
        self.persist = persist

    def record(self, snapshot: Snapshot, outcome: str, record: JsonObject) -> None:
        """Record a CPI call's outcome on its snapshot; its task hears of it from
        the log (domain/services/task_progress.py, decision 39). Each outcome is
        its own save: nothing is shared between the CPI threads, and group
        commit (adapters/group_commit.py) batches their commits. (Outcomes of
        one task used to be combined into one save per task: one writer at a
        time per task, which made a one-deployment fire the slowest case.)"""
        # First round: the snapshot as this worker last saved it (its claim),
        # without reading it again, and a CID taken for new (a CID the ledger
        # already holds conflicts on its SnapshotCid index). A conflict, or any
        # failed round, and every later round reads afresh.
        rounds = 0

        def decide() -> list[Aggregate]:
            nonlocal rounds
            rounds += 1
            fresh = rounds > 1
            current = self.ledger.snapshots.get(snapshot.id) if fresh else snapshot
            if current.state not in (TAKING, DELETING, IN_DOUBT):
                return []  # recorded already (a retried save that did commit)
            return [current, *self._apply(current, outcome, record, current.current_actor, check_cid=fresh)]

        self.persist(decide)

    def _apply(self, snapshot: Snapshot, outcome: str, record: JsonObject, actor: str,
               check_cid: bool = True) -> list[Aggregate]:
        """Apply an outcome to its snapshot; returns what else must be saved with it.
        `check_cid=False`: leave a CID the ledger already holds to the index's conflict."""
        call = {k: v for k, v in record.items() if k not in ("snapshot_cid", "reason")}
        if outcome == "taken":
            cid = str(record["snapshot_cid"])
            index = self.ledger.snapshots.new_cid_index(cid, snapshot.id)
            if check_cid and self.ledger.snapshots.cid_taken(cid):
                error: JsonObject = {"type": "Snapledger::DuplicateSnapshotCid", "ok_to_retry": False,
                         "message": f"the CPI returned snapshot CID '{cid}', which the ledger already holds"}
                record["error"] = error
                snapshot.record_failed(error=error, call=call, actor=actor)
                return []
            snapshot.record_taken(snapshot_cid=cid, call=call, actor=actor)
            return [index]
        if outcome == "skipped":
            snapshot.record_skipped(reason=str(record["reason"]), call=call, actor=actor)
        elif outcome == "deleted":
            snapshot.record_deleted(reason=str(record["reason"]), call=call, actor=actor)
        elif outcome == "cancelled":
            snapshot.record_cancelled(reason=str(record["reason"]), actor=actor)
        else:
            snapshot.record_failed(error=json_object(record["error"]) or {}, call=call, actor=actor)
        return []

