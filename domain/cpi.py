"""The CPI port: how the domain reaches the IaaS.

The interface is the BOSH CPI's own (method names and arguments as in the BOSH
external CPI protocol), so the built-in local CPI and any external CPI
executable are interchangeable behind it. Errors carry the BOSH error type
string (``Bosh::Clouds::CloudError``, ``Bosh::Clouds::NotImplemented``...)
because operators search their logs for exactly those names.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .json_types import JsonObject, JsonValue

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

    def as_dict(self) -> JsonObject:
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
    extra: JsonObject = field(default_factory=dict)
    answer: JsonValue = None  # the result of a call that succeeded


class CallLog:
    """The calls each thread made through one CPI since it last took them.

    An operation takes them after its call, so every call it caused is
    recorded under its own method and request id: the `info` a first call
    needs included, and a failed `info` never under the next method's name."""

    # A thread whose caller never takes its calls keeps only the latest few.
    KEPT = 16

    def __init__(self) -> None:
        self._tls = threading.local()

    def add(self, record: CallRecord) -> None:
        if not hasattr(self._tls, "calls"):
            self._tls.calls = deque(maxlen=self.KEPT)
        self._tls.calls.append(record)
        self._tls.last = record

    @property
    def last(self) -> CallRecord | None:
        return getattr(self._tls, "last", None)

    def take(self) -> list[CallRecord]:
        calls = list(getattr(self._tls, "calls", ()))
        self._tls.calls = deque(maxlen=self.KEPT)
        return calls


def calls_made(cpi: object) -> list[CallRecord]:
    """Take the calls this thread made through `cpi` since it last asked (none
    from a CPI that keeps no record of its calls)."""
    return cpi.take_calls() if isinstance(cpi, RecordsCalls) else []


MAX_ANSWER_CHARS = 1024  # an answer is copied onto events: a CID, a disk list, not megabytes


def bounded_answer(answer: JsonValue) -> JsonValue:
    """The answer as recorded: as it is when small, else a clipped JSON text
    (a CPI that answered 100 kB is refused, and its answer must not be kept whole)."""
    text = json.dumps(answer, default=str)
    if len(text) <= MAX_ANSWER_CHARS:
        return answer
    return text[:MAX_ANSWER_CHARS] + f"... [{len(text) - MAX_ANSWER_CHARS} chars clipped]"


def call_entry(record: CallRecord, clip: Callable[[str], str] = lambda text: text) -> JsonObject:
    """A call as the task's CPI log stores it (`clip` bounds the CPI's texts)."""
    entry: JsonObject = {"method": record.method, "request_id": record.request_id,
                             "duration_s": round(record.duration_s, 6), "log": clip(record.log),
                             "stderr": clip(record.stderr)}
    if record.answer is not None:
        entry["answer"] = bounded_answer(record.answer)
    if record.extra.get("error"):
        entry["error"] = record.extra["error"]
    if record.extra.get("stdout"):  # kept only when the CPI's answer was unusable
        entry["stdout"] = clip(str(record.extra["stdout"]))
    return entry


class Cpi(Protocol):
    """The subset of the BOSH CPI API that snapshots need.

    Implementations raise :class:`CpiError` for every failure. What a CPI can
    do beyond this (the capabilities below) is found with `isinstance`, never
    from its type name: a wrapper (rate limit) or a new adapter says what it
    can do by having the methods.
    """

    name: str

    def info(self) -> JsonObject: ...

    def snapshot_disk(self, disk_cid: str, metadata: JsonObject) -> str: ...

    def delete_snapshot(self, snapshot_cid: str) -> None: ...

    def current_vm_id(self) -> str: ...

    def get_disks(self, vm_cid: str) -> list[str]: ...


# Optional capabilities ---------------------------------------------------------


@runtime_checkable
class RecordsCalls(Protocol):
    """Keeps what each call left behind (log, stderr, request id), per thread:
    what the task's CPI log shows (BOSH's `task --cpi`)."""

    @property
    def last_call(self) -> CallRecord | None:
        """The current thread's latest call."""

    def take_calls(self) -> list[CallRecord]:
        """The current thread's calls since it last took them."""


@runtime_checkable
class FindsSnapshots(Protocol):
    """Can tell whether a snapshot an in-doubt `snapshot_disk` may have taken
    exists (by the metadata it was asked with): the call is then resolved
    instead of left to the operator."""

    def find_snapshot(self, disk_cid: str, metadata: JsonObject) -> str | None: ...


@runtime_checkable
class RestoresSnapshots(Protocol):
    """Can write a snapshot back onto a disk (BOSH's CPI protocol cannot)."""

    def has_disk(self, disk_cid: str) -> bool: ...

    def restore_snapshot(self, snapshot_cid: str, disk_cid: str) -> None: ...


# Each capability with its members: what a wrapper must forward to keep it
# (`isinstance` looks the members up on the wrapper's class from Python 3.12 on).
CAPABILITIES: dict[type, tuple[str, ...]] = {
    RecordsCalls: ("last_call", "take_calls"),
    FindsSnapshots: ("find_snapshot",),
    RestoresSnapshots: ("has_disk", "restore_snapshot"),
}


def capability_members(cpi: object) -> tuple[str, ...]:
    """The members of every optional capability `cpi` has."""
    return tuple(name for capability, members in CAPABILITIES.items() if isinstance(cpi, capability)
                 for name in members)
