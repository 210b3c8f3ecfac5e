"""The CPI port: how the domain reaches the IaaS.

The interface is the BOSH CPI's own (method names and arguments as in the BOSH
external CPI protocol), so the built-in local CPI and any external CPI
executable are interchangeable behind it. Errors carry the BOSH error type
string (``Bosh::Clouds::CloudError``, ``Bosh::Clouds::NotImplemented``...)
because operators search their logs for exactly those names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# BOSH error type names (src/bosh-director/lib/clouds/errors.rb).
CPI_ERROR = "Bosh::Clouds::CpiError"
NOT_IMPLEMENTED = "Bosh::Clouds::NotImplemented"
NOT_SUPPORTED = "Bosh::Clouds::NotSupported"
CLOUD_ERROR = "Bosh::Clouds::CloudError"
VM_NOT_FOUND = "Bosh::Clouds::VMNotFound"
DISK_NOT_FOUND = "Bosh::Clouds::DiskNotFound"
NO_DISK_SPACE = "Bosh::Clouds::NoDiskSpace"
DISK_NOT_ATTACHED = "Bosh::Clouds::DiskNotAttached"
VM_CREATION_FAILED = "Bosh::Clouds::VMCreationFailed"
NETWORK_NOT_FOUND = "Bosh::Clouds::NetworkNotFound"

KNOWN_ERROR_TYPES = frozenset(
    {
        CPI_ERROR,
        NOT_IMPLEMENTED,
        NOT_SUPPORTED,
        CLOUD_ERROR,
        VM_NOT_FOUND,
        DISK_NOT_FOUND,
        NO_DISK_SPACE,
        DISK_NOT_ATTACHED,
        VM_CREATION_FAILED,
        NETWORK_NOT_FOUND,
    }
)

# Errors produced by snapledger itself when talking to a CPI went wrong
# (not answers of the CPI): they name what happened so an operator can tell
# a broken CPI from a failing cloud.
UNKNOWN_ERROR = "Snapledger::Cpi::UnknownError"  # an error type the protocol does not know
INVALID_RESPONSE = "Snapledger::Cpi::InvalidResponse"  # stdout not a valid response
NOT_EXECUTABLE = "Snapledger::Cpi::NonExecutable"
TIMED_OUT = "Snapledger::Cpi::TimedOut"


# What of an error answer is recorded: a CPI may answer megabytes.
MAX_MESSAGE_CHARS = 4096
MAX_TYPE_CHARS = 200


@dataclass
class CpiError(Exception):
    """An error answered by (or about) a CPI call."""

    type: str
    message: str
    ok_to_retry: bool = False
    log: str = ""

    def __post_init__(self) -> None:
        super().__init__(f"{self.type}: {self.message}")

    @property
    def is_not_implemented(self) -> bool:
        # BOSH maps two legacy spellings to NotImplemented (external_cpi.rb:268-274).
        if self.type == NOT_IMPLEMENTED:
            return True
        if self.type == "InvalidCall" and self.message.startswith("Method is not known, got"):
            return True
        return self.type == CLOUD_ERROR and self.message.startswith("Invalid Method:")

    def as_dict(self) -> dict[str, Any]:
        """As recorded on events: bounded, whatever the CPI answered."""
        message = self.message if len(self.message) <= MAX_MESSAGE_CHARS else (
            f"{self.message[:MAX_MESSAGE_CHARS]}... [{len(self.message) - MAX_MESSAGE_CHARS} chars clipped]")
        return {"type": self.type[:MAX_TYPE_CHARS], "message": message, "ok_to_retry": self.ok_to_retry}


@dataclass
class CallRecord:
    """What a CPI call left behind for the operator (BOSH's task `cpi` log)."""

    method: str
    request_id: str
    log: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Cpi(Protocol):
    """The subset of the BOSH CPI API that snapshots need.

    Implementations raise :class:`CpiError` for every failure. ``last_call``
    may be consulted right after a call (same thread) for its log.
    """

    name: str

    def info(self) -> dict[str, Any]: ...

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any]) -> str: ...

    def delete_snapshot(self, snapshot_cid: str) -> None: ...

    def current_vm_id(self) -> str: ...

    def get_disks(self, vm_cid: str) -> list[str]: ...
