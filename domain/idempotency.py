"""Idempotency keys: a retried command returns the original task.

A key is recorded in the event store, in the SAME transaction as the command's
own events (see LedgerStore.save), so it holds across restarts and replicas: of
two requests racing with one key, one commits and the other's whole transaction
fails on the key's version and answers with the first one's task.

The key reaches the service layer explicitly: a command that creates a task
takes `idempotency: Idempotency | None` (the HTTP middleware builds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


def idempotency_key_id(actor: str, key: str) -> UUID:
    # Per actor: two users cannot collide on (or probe) each other's keys.
    return uuid5(NAMESPACE_URL, f"snapledger:/idempotency/{actor}/{key}")


class IdempotencyKey(Aggregate):
    @staticmethod
    def create_id(actor: str, key: str) -> UUID:
        return idempotency_key_id(actor, key)

    @event("Recorded")
    def __init__(self, actor: str, key: str, fingerprint: str, method: str, path: str,
                 task_id: str | None) -> None:
        self.actor = actor
        self.key = key
        self.fingerprint = fingerprint
        self.method = method
        self.path = path
        self.task_id = task_id


class KeyAlreadyUsed(Exception):
    """Another request recorded this key first."""


@dataclass(frozen=True)
class Idempotency:
    """The idempotency key a command runs under, and what it was sent with."""

    actor: str
    key: str
    fingerprint: str
    method: str
    path: str

    @property
    def id(self) -> UUID:
        return idempotency_key_id(self.actor, self.key)

    def record(self, task_id: str | None) -> IdempotencyKey:
        """The key's aggregate: for the command's task, or None (a command without a task)."""
        return IdempotencyKey(actor=self.actor, key=self.key, fingerprint=self.fingerprint, method=self.method,
                              path=self.path, task_id=task_id)
