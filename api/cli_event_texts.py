"""How a followed task's steps that are not per disk read: job updates' and
restores' drain, stop, safety snapshot and restore (`cli_progress.Progress`).

One declared table per feature, joined in EVENT_TEXTS: an event type with no
text here is only a step of a disk's line (or the end the summary says).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from snapledger.domain.agent import CONTRACT_ENV

EventText = Callable[[dict[str, Any]], str]


def drain_summary(result: dict[str, Any]) -> str:
    parts = []
    for job in result.get("jobs", []):
        if job.get("skipped"):
            parts.append(f"{job['job']}: {job['skipped']}")
            continue
        values = [str(c["value"]) for c in job.get("calls", []) if c.get("value") is not None]
        waited = sum(c.get("waited_s", 0) for c in job.get("calls", []))
        parts.append(f"{job['job']}: {', '.join(values) or 'ran'}" + (f" (waited {waited:g} s)" if waited else ""))
    return "; ".join(parts) or "no jobs"


def drain_calls(result: dict[str, Any]) -> str:
    """Each drain script call as the script saw it: argv, the contract's
    environment (an unset variable is shown as unset), and its answer."""
    lines = []
    for job in result.get("jobs", []):
        for c in job.get("calls", []):
            env = c.get("env")
            shown = ("" if env is None else  # recorded before the environment was
                     " " + " ".join(f"{n}={env[n]}" if n in env else f"{n} unset" for n in CONTRACT_ENV))
            answer = c.get("value") if c.get("value") is not None else f"exit {c.get('exit_code')}"
            lines.append(f"\n           {job['job']}: drain {' '.join(c.get('argv', [])[1:])}{shown} -> {answer}")
    return "".join(lines)


def stop_summary(result: dict[str, Any]) -> str:
    return "; ".join(f"{j['job']}: {j.get('skipped') or 'stopped'}" for j in result.get("jobs", [])) or "no jobs"


def _failure(d: dict[str, Any]) -> str:
    return f"{d['error']['type']}: {d['error']['message']}"


def drain_and_stop_texts(aggregate: str) -> dict[str, EventText]:
    """The steps a job update and a restore share: drain, then stop, the instance's jobs."""
    return {
        f"{aggregate}.DrainStarted": lambda d: f"{d['instance']}: drain ({d['drain_type']}) of {', '.join(d['jobs'])}",
        f"{aggregate}.DrainCompleted": lambda d: (f"{d['instance']}: drained ({drain_summary(d['result'])})"
                                                  f"{drain_calls(d['result'])}"),
        f"{aggregate}.DrainFailed": lambda d: f"{d['instance']}: drain failed: {_failure(d)}{drain_calls(d['result'])}",
        f"{aggregate}.JobStopped": lambda d: f"{d['instance']}: jobs stopped ({stop_summary(d['result'])})",
        f"{aggregate}.StopFailed": lambda d: f"{d['instance']}: stop failed: {_failure(d)}",
    }


JOB_UPDATE_TEXTS: dict[str, EventText] = {
    "JobUpdate.Announced": lambda d: (f"job update announced: {d['job']}, {len(d['instances'])} instance(s), "
                                      f"drain {d['drain_type']}, max in flight {d['max_in_flight']}"),
    **drain_and_stop_texts("JobUpdate"),
    "JobUpdate.CleanSnapshotsRequested": lambda d: f"{d['instance']}: clean snapshot of {', '.join(d['disks'])}",
    "JobUpdate.SnapshotSkipped": lambda d: f"{d['instance']}: snapshot skipped ({d['reason']})",
    "JobUpdate.SnapshotFailed": lambda d: f"{d['instance']}: clean snapshot failed",
    "JobUpdate.ReadyForUpdate": lambda d: f"{d['instance']}: ready for update",
    "JobUpdate.InstancesCancelled": lambda d: f"not updated: {', '.join(d['instances'])} ({d['reason']})",
}

RESTORE_TEXTS: dict[str, EventText] = {
    "Restore.Requested": lambda d: (f"restore of {d['snapshot_cid']} into "
                                    f"{'new disk' if d['new_disk'] else 'disk'} {d['target_disk']} requested"),
    **drain_and_stop_texts("Restore"),
    "Restore.SafetySnapshotRequested": lambda d: f"safety snapshot of disk {d['disk_cid']} requested",
    "Restore.SafetySnapshotTaken": lambda d: f"safety snapshot taken: {d['snapshot_cid']}",
    "Restore.SafetySnapshotFailed": lambda d: f"safety snapshot failed: {_failure(d)}",
    "Restore.CpiCallStarted": lambda d: (f"CPI {d['method']} {d['snapshot_cid']} -> disk {d['disk_cid']} started "
                                         f"(attempt {d['attempt']})"),
    "Restore.CpiCallInDoubt": lambda d: f"restore call in doubt, repeated: {d['reason']}",
    "Restore.Restored": lambda d: f"restored {d['snapshot_cid']} into disk {d['disk_cid']}",
    "Restore.Failed": lambda d: f"restore failed ({d['step']}): {_failure(d)}",
    "NewDisk.Claimed": lambda d: f"new disk {d['disk_cid']} claimed for this restore",
    "Deployment.DiskRestored": lambda d: f"new disk {d['disk_cid']} recorded in the deployment",
}

EVENT_TEXTS: dict[str, EventText] = {**JOB_UPDATE_TEXTS, **RESTORE_TEXTS}
