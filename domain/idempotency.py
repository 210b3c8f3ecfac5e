"""Idempotency keys: a retried command returns the original task.

A key is recorded in the event store, in the SAME transaction as the command's
own events (see Ledger.save), so it holds across restarts and replicas: of two
requests racing with one key, one commits and the other's whole transaction
fails on the key's version and answers with the first one's task.
"""

from __future__ import annotations

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
