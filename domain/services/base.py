"""The base every feature service stands on: the event store and how it saves.

Every command loads the aggregates it needs, decides, and saves everything it
changed in ONE `save()` (one transaction): a task and all its snapshot
requests are durable together before the caller is answered.

The services create aggregates with ids they choose (`Task(id=...)`): the
library accepts the `id` an aggregate class declares (`id: UUID`), which
mypy cannot see, hence the `type: ignore[call-arg]` there.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from typing import Any, ClassVar
from collections.abc import Callable, Iterable, Mapping, Sequence
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate, DomainEventProtocol, MutableOrImmutableAggregate
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, Recording

from ..shared_reads import SharedReads
from ..idempotency import Idempotency, IdempotencyKey, KeyAlreadyUsed
from ..snapshot import Refusal
from ..task import Task
from ..task_numbers import TASK_NUMBERS
from ..log import Log

AGGREGATE_CACHE_SIZE = 500
COPY_ATTEMPTS = 20  # see get_aggregate
EXISTENCE_MEMO_SIZE = 10_000

# How one save's events become durable, given them: the event store's own `put`
# by default; adapters/group_commit.py shares one transaction among concurrent
# saves (each save still returns only after its events committed: decision 16).
RecordEvents = Callable[[list[DomainEventProtocol[UUID]]], list[Recording[UUID]]]
# What a command decided: the aggregates it changed (empty: nothing to save).
Decide = Callable[[], Sequence[BaseAggregate[UUID]]]
# What a save takes: the library's own parameter type (an override may not narrow it).
Saveable = MutableOrImmutableAggregate[UUID] | DomainEventProtocol[UUID] | None
# A save that survives a database outage, given what to decide (LedgerStore.save_through_outage).
Persist = Callable[[Decide], list[Recording[UUID]]]


class _Collected(ProcessingEvent):  # type: ignore[type-arg]  # the library's generic, used as it uses it
    """The library's ProcessingEvent without its runtime-Protocol isinstance checks.

    On Python 3.11 each `isinstance(obj, SomeProtocol)` walks the protocol's
    attributes: two per aggregate, 0.6 s of a 10,000-instance fire's 3.3 s
    (profiled, docs/performance.md). Our aggregates are `BaseAggregate`s, so a
    plain class check says the same; anything else takes the library's path."""

    # `**kwargs: Any`: the library's signature (saved with the events, read by its own recorders).
    def collect_events(self, *objs: Saveable, **kwargs: Any) -> None:
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


class LedgerStore(Application):  # type: ignore[type-arg]  # aggregate ids are UUIDs
    """The event-sourced application the feature services share. Thread-safe."""

    name = "Ledger"  # also the prefix of the store's tables: never renamed
    # A bounded cache of aggregates, fast-forwarded from the store on every
    # read (so never stale): a deployment or task with a long history is read
    # as its new events only, not replayed. Bounded because the library reads
    # "0" as *unbounded*: every aggregate a process ever read stayed in memory
    # (a worker held every snapshot it took). docs/performance.md.
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE_SIZE),
                                     "AGGREGATE_CACHE_FASTFORWARD": "y"}

    def __init__(self, env: dict[str, str] | None = None, *, record_events: RecordEvents | None = None,
                 on_saved: Iterable[Callable[[], None]] = ()) -> None:
        super().__init__(env)
        self._record_events = record_events
        self._on_saved = tuple(on_saved)
        self._existence: OrderedDict[UUID, bool] = OrderedDict()  # created_with_seen
        self._existence_lock = threading.Lock()
        self._shared_reads = SharedReads()  # read: decision 19

    # Saving ------------------------------------------------------------------

    def save(self, *objs: Saveable, idempotency: Idempotency | None = None, **kwargs: Any) -> list[Recording[UUID]]:
        """`idempotency`: the key the command runs under, saved with its task in
        the same transaction (KeyAlreadyUsed: another request recorded it first)."""
        task = next((o for o in objs if isinstance(o, Task)), None) if idempotency is not None else None
        if idempotency is None or task is None:
            return self._save(*objs, **kwargs)
        if idempotency.id in self.repository:
            raise KeyAlreadyUsed(idempotency.key)
        try:
            return self._save(*objs, idempotency.record(str(task.id)), **kwargs)
        except IntegrityError:
            if idempotency.id in self.repository:  # a racing request with this key committed first
                raise KeyAlreadyUsed(idempotency.key) from None
            raise

    def _save(self, *objs: Saveable, **kwargs: Any) -> list[Recording[UUID]]:
        # `Application.save` (eventsourcing 9.5.6) step for step, collecting with _Collected.
        processing_event = _Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        _number_new_tasks(objs, recordings)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, kept for fidelity
        return recordings

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        if self._record_events is None or processing_event.tracking is not None or processing_event.saved_kwargs:
            return super()._record(processing_event)
        return self._record_events(processing_event.events)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        # Wake in-process followers at once instead of waiting for their poll.
        super()._notify(recordings)
        for callback in self._on_saved:
            callback()

    def save_with_retry(self, decide: Decide, attempts: int = 25,
                        idempotency: Idempotency | None = None) -> list[Recording[UUID]]:
        """Run `decide` (which reloads and mutates aggregates) and save, retrying
        on optimistic-concurrency conflicts. `decide` must be re-runnable."""
        for attempt in range(1, attempts + 1):
            aggregates = decide()
            if not aggregates:
                return []
            try:
                return self.save(*aggregates, idempotency=idempotency)
            except KeyAlreadyUsed:
                raise
            except IntegrityError:
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0, 0.002 * attempt))
        raise AssertionError("unreachable")

    def save_through_outage(self, decide: Decide, what: str, log: Log | None = None,
                            sleep: Callable[[float], None] = time.sleep) -> list[Recording[UUID]]:
        """Save an outcome whatever it takes: only this process knows it (a CPI
        call or an agent step happened). While the database is away keep trying
        (if the process dies meanwhile, its recovery sweep finds the step)."""
        delay = 0.2
        while True:
            try:
                return self.save_with_retry(decide)
            except (OperationalError, InterfaceError) as error:
                if log is not None:
                    log.warning(f"cannot record {what} yet; retrying", error=str(error), retry_in_s=delay)
                sleep(delay)
                delay = min(delay * 2, 5.0)

    def record_refusal(self, command: str, reason: str, deployment: str | None, details: Mapping[str, object],
                       actor: str) -> None:
        self.save(Refusal(command=command, reason=reason, deployment=deployment, details=details, actor=actor))

    # Idempotency keys ----------------------------------------------------------

    def find_idempotency_key(self, actor: str, key: str) -> IdempotencyKey | None:
        found = self.load(Idempotency(actor, key, "", "", "").id)
        return found if isinstance(found, IdempotencyKey) else None

    def record_idempotency_key(self, idempotency: Idempotency) -> None:
        """For a command that saved no task (a PUT), after it ran; nothing when
        its task recorded the key already."""
        if idempotency.id not in self.repository:
            self.save(idempotency.record(None))

    # Reading -----------------------------------------------------------------

    def load(self, aggregate_id: UUID) -> Any | None:
        """An aggregate to change (None: there is none)."""
        try:
            return self.get_aggregate(aggregate_id)
        except AggregateNotFoundError:
            return None

    def read(self, aggregate_id: UUID) -> Any | None:
        """For reading only (the object may be shared with concurrent callers;
        commands that change an aggregate load it with `load`)."""
        return self._shared_reads.read(aggregate_id, lambda: self.load(aggregate_id))

    def contains(self, aggregate_id: UUID) -> bool:
        return aggregate_id in self.repository

    def get_aggregate(self, aggregate_id: UUID) -> Any:
        """The aggregate, a copy of the cached one. eventsourcing deep-copies it
        outside the lock under which another thread fast-forwards it in place, so
        a copy taken meanwhile can fail (`dictionary changed size during
        iteration`: a task whose many operations finish at once); the copy has no
        effect, so it is simply taken again."""
        for attempt in range(1, COPY_ATTEMPTS + 1):
            try:
                return self.repository.get(aggregate_id)
            except RuntimeError as error:
                if attempt == COPY_ATTEMPTS or "changed size during iteration" not in str(error):
                    raise
        raise AssertionError("unreachable")

    def created_with_seen(self, aggregate_id: UUID) -> bool:
        """Whether an aggregate exists, for one created in the same transaction
        as something the caller has already seen (a task's JobUpdate or Restore,
        asked about from the task's later events): that answer cannot change,
        so it is remembered, yes or no. The job-update and restore workers ask
        it of every finished operation of every task; it was two queries per
        snapshot taken (docs/performance.md)."""
        with self._existence_lock:
            known = self._existence.get(aggregate_id)
        if known is None:
            known = aggregate_id in self.repository
            with self._existence_lock:
                self._existence[aggregate_id] = known
                if len(self._existence) > EXISTENCE_MEMO_SIZE:
                    self._existence.popitem(last=False)
        return known


def _number_new_tasks(objs: Sequence[Saveable], recordings: list[Recording[UUID]]) -> None:
    """A new task's number is the position of its first event in the store:
    unique across API replicas without a coordinator, and an integer as the
    bosh CLI wants (issue 17). The tasks view keeps it (`seq`) for later reads."""
    firsts = {r.domain_event.originator_id: r.notification.id for r in recordings or ()
              if r.domain_event.originator_version == 1 and getattr(r, "notification", None) is not None}
    for obj in objs:
        if isinstance(obj, Task) and obj.id in firsts:
            obj.number = firsts[obj.id]
            TASK_NUMBERS.remember(str(obj.id), obj.number)  # for this process's log lines
