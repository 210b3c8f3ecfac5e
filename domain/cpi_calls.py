"""How the CPI calls an operation made are kept on its events (snapshots, discoveries, restores)."""

from __future__ import annotations

from collections.abc import Iterable

from .cpi import CallRecord, call_entry
from .json_types import JsonObject

# Keep events small: a CPI's log can be megabytes.
MAX_LOG_CHARS = 16_384


def clip(text: str) -> str:
    if len(text) <= MAX_LOG_CHARS:
        return text
    return text[:MAX_LOG_CHARS] + f"... [{len(text) - MAX_LOG_CHARS} chars clipped]"


def record_calls(record: JsonObject, calls: Iterable[CallRecord]) -> None:
    """Put the CPI calls an operation made into its record: the last one is
    the record's own (its method, request id, log: when `info` failed before
    the operation's method ran, that is `info`); earlier ones (`info`,
    `current_vm_id` before `get_disks`) each its own entry in `calls_before`."""
    calls = list(calls)
    if not calls:
        return
    last = call_entry(calls[-1], clip)
    record.update(method=last["method"], request_id=last["request_id"], log=last["log"], stderr=last["stderr"])
    for key in ("stdout", "answer"):
        if key in last:
            record[key] = last[key]
    if len(calls) > 1:
        record["calls_before"] = [call_entry(c, clip) for c in calls[:-1]]
