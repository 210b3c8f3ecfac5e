"""How a followed task reads in a terminal.

An operator watching a task over 50 instances wants one line per disk with
how far along it is (`17/100`), not the five or six events each disk's
snapshot is made of: the events are in `audit --task ID` and `--json`. Steps
that are not per disk (a job update's drain, a restore's stop) have their
own line, through the declared table `cli_event_texts.EVENT_TEXTS`. Times carry their
zone (the terminal's local zone, as `date` shows it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .cli_event_texts import EVENT_TEXTS

RESULT_WIDTH = 200  # a task's result can list every CID of a deployment: the end line shortens it


def local_time(iso: str | None, with_date: bool = False) -> str:
    """`20:22:11 UTC` (or with the date) in the local zone; `-` when there is no time."""
    if not iso:
        return "-"
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z" if with_date else "%H:%M:%S %Z")


def shorten(text: str | None, width: int) -> str:
    text = "-" if text is None else " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


# A CPI error can be a whole backtrace: a disk's line shows its first lines
# once, the summary its first line; `task ID --cpi` has the full text.
EXCERPT_LINES = 4


def first_line(text: Any) -> str:
    lines = str(text or "").splitlines() or [""]
    return lines[0] + (f" [+{len(lines) - 1} lines]" if len(lines) > 1 else "")


def excerpt(text: Any) -> str:
    lines = str(text or "").splitlines() or [""]
    if len(lines) <= EXCERPT_LINES:
        return "\n".join(lines)
    more = f"    ... {len(lines) - EXCERPT_LINES} more lines (all in `snapledger task ID --cpi`)"
    return "\n".join([*lines[:EXCERPT_LINES], more])


def _error(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type') or 'error'}: {error.get('message') or ''}".rstrip(": ")
    return str(error)


def describe_operation(data: dict[str, Any]) -> str:
    """One disk's outcome: `db/0 disk disk-a: taken snap-...` (failures with their error)."""
    detail = data.get("detail") or {}
    disk = f" disk {detail['disk_cid']}" if detail.get("disk_cid") else ""  # a job update's instance has none
    text = f"{detail.get('instance') or '-'}{disk}: {data.get('outcome') or '-'}"
    if detail.get("snapshot_cid") and data.get("outcome") != "deleted":
        text += f" {detail['snapshot_cid']}"
    if detail.get("error_type"):
        text += f" ({detail['error_type']}: {excerpt(detail.get('message'))})"
    elif detail.get("reason"):
        text += f" ({detail['reason']})"
    return text


class Progress:
    """Turns a task's events into the lines a person reads; keeps the n/N count."""

    def __init__(self) -> None:
        self.total = 0
        self.finished = 0
        self.outcomes: dict[str, int] = {}
        self.where: dict[str, str] = {}  # operation id -> "db/0 disk disk-a", for retries

    def line(self, event: dict[str, Any]) -> str | None:
        """The line for this event, or None for an event that is only a step of a disk's line."""
        kind, data = event["type"], event.get("data") or {}
        text = self.text(kind, data)
        return None if text is None else f"{local_time(event.get('time'))}  {text}"

    def text(self, kind: str, data: dict[str, Any]) -> str | None:
        if kind == "Task.Queued":
            self.total += len(data.get("operations") or [])
            disks = f", {self.total} disk(s)" if self.total else ""
            where = f" of deployment {data['deployment']}" if data.get("deployment") else ""
            return f"{data.get('description') or 'task'}{where}{disks}"
        if kind == "Task.OperationsAdded":
            self.total += len(data.get("operations") or [])
            return None
        if kind == "Snapshot.Requested":
            operation = (data.get("metadata") or {}).get("snapledger_operation_id")
            if operation:
                index = data.get("index") if data.get("index") is not None else data.get("instance_id")
                self.where[operation] = f"{data.get('job')}/{index} disk {data.get('disk_cid')}"
            return None
        if kind == "Snapshot.AttemptFailed":
            operation = str(data.get("caused_by") or "").partition("/")[0]
            return (f"{self.where.get(operation, 'snapshot')}: attempt {data.get('attempt')} of "
                    f"{data.get('method')} failed ({_error(data.get('error'))}), retrying in "
                    f"{data.get('retry_in_s', 0):g} s")
        if kind == "Task.OperationFinished":
            self.finished += 1
            outcome = data.get("outcome") or "-"
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            return f"{self.finished}/{max(self.total, self.finished)}  {describe_operation(data)}"
        if kind in EVENT_TEXTS:
            return EVENT_TEXTS[kind](data)
        return None  # a step of a disk's line (CPI call, taken, ...) or the end (the summary says it)

    def summary(self, task: dict[str, Any]) -> str:
        """The one line at the end: state, when, per-outcome counts, the (shortened) result."""
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items()))
        disks = f" ({self.finished}/{max(self.total, self.finished)} disks: {counts})" if self.finished else ""
        return (f"Task {task.get('number') or task['id']} {task['state']} at {local_time(task.get('finished_at'))}"
                f"{disks}: {shorten(first_line(task.get('result')), RESULT_WIDTH)}")


def describe_event(event: dict[str, Any]) -> str:
    """One event on its own (a history's job-update steps): its text, else its type."""
    text = Progress().text(event["type"], event.get("data") or {}) or event["type"]
    return f"{local_time(event.get('time'))}  {text}"
