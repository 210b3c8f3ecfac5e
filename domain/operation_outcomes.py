"""Recording CPI call outcomes on their snapshots and tasks (the third step of domain/operations.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .combining import Combiner
from .snapshot import DELETING, IN_DOUBT, TAKING, Snapshot

if TYPE_CHECKING:
    from .application import Ledger


class OutcomeRecorder:
    """`persist(decide)`: the save that survives a database outage (only this process knows the outcome)."""

    def __init__(self, ledger: Ledger, persist: Callable[[Callable[[], list[Any]]], Any]) -> None:
        self.ledger = ledger
        self.persist = persist
        self._combined: Combiner[tuple[Snapshot, str, dict[str, Any]]] = Combiner()

    def record(self, snapshot: Snapshot, outcome: str, record: dict[str, Any]) -> None:
        """Record a CPI call's outcome on its snapshot (its task hears of it from
        the log: domain/services/task_progress.py).

        Outcomes of one task that arrive together are saved together
        (domain/combining.py): one commit for many, and no task to share."""
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
            for claimed, outcome, record in outcomes:
                snapshot = self.ledger.snapshots.get(claimed.id) if fresh else claimed
                if snapshot.state not in (TAKING, DELETING, IN_DOUBT):
                    continue  # recorded already (a retried save that did commit)
                changed += [snapshot, *self._apply(snapshot, outcome, record, snapshot.current_actor, changed,
                                                   check_cid=fresh)]
            return changed

        self.persist(decide)

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

