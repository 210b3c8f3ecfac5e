"""Domain errors. The API maps each to an HTTP status; the CLI to a message and exit code."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error a caller can act on."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(LedgerError):
    status = 404
    code = "not_found"


class DeploymentNotFound(NotFound):
    code = "deployment_not_found"


class InstanceNotFound(NotFound):
    code = "instance_not_found"


class SnapshotNotFound(NotFound):
    code = "snapshot_not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class Conflict(LedgerError):
    status = 409
    code = "conflict"


class SnapshotsDisabled(Conflict):
    code = "snapshots_disabled"


class ManagedByConfig(Conflict):
    """A runtime change of a setting the configuration file (or a SNAPLEDGER_*
    variable) sets: the file wins, always (docs/decisions.md #24)."""

    code = "managed_by_config"


class InvalidState(Conflict):
    code = "invalid_state"


class InventoryConflict(Conflict):
    """An inventory that contradicts itself (an instance or a disk listed twice)."""

    code = "inventory_conflict"


class UnknownCpi(LedgerError):
    status = 400
    code = "unknown_cpi"
