"""`snapledger update-job`: announce a job update and follow it until every instance is ready."""

from __future__ import annotations

from typing import Any

import click

from .cli import EVENT_TEXTS, _deployment_option, _no_wait_option, call, main, start_task
from .cli_args import split_instance
from .client import Client


def _drain_summary(result: dict[str, Any]) -> str:
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
    from snapledger.domain.agent import CONTRACT_ENV

    lines = []
    for job in result.get("jobs", []):
        for c in job.get("calls", []):
            env = c.get("env")
            shown = ("" if env is None else  # recorded before the environment was
                     " " + " ".join(f"{n}={env[n]}" if n in env else f"{n} unset" for n in CONTRACT_ENV))
            answer = c.get("value") if c.get("value") is not None else f"exit {c.get('exit_code')}"
            lines.append(f"\n           {job['job']}: drain {' '.join(c.get('argv', [])[1:])}{shown} -> {answer}")
    return "".join(lines)


def _stop_summary(result: dict[str, Any]) -> str:
    return "; ".join(f"{j['job']}: {j.get('skipped') or 'stopped'}" for j in result.get("jobs", [])) or "no jobs"


EVENT_TEXTS.update({
    "JobUpdate.Announced": lambda d: (f"job update announced: {d['job']}, {len(d['instances'])} instance(s), "
                                      f"drain {d['drain_type']}, max in flight {d['max_in_flight']}"),
    "JobUpdate.DrainStarted": lambda d: f"{d['instance']}: drain ({d['drain_type']}) of {', '.join(d['jobs'])}",
    "JobUpdate.DrainCompleted": lambda d: (f"{d['instance']}: drained ({_drain_summary(d['result'])})"
                                           f"{drain_calls(d['result'])}"),
    "JobUpdate.DrainFailed": lambda d: (f"{d['instance']}: drain failed: {d['error']['type']}: {d['error']['message']}"
                                        f"{drain_calls(d['result'])}"),
    "JobUpdate.JobStopped": lambda d: f"{d['instance']}: jobs stopped ({_stop_summary(d['result'])})",
    "JobUpdate.StopFailed": lambda d: f"{d['instance']}: stop failed: {d['error']['type']}: {d['error']['message']}",
    "JobUpdate.CleanSnapshotsRequested": lambda d: f"{d['instance']}: clean snapshot of {', '.join(d['disks'])}",
    "JobUpdate.SnapshotSkipped": lambda d: f"{d['instance']}: snapshot skipped ({d['reason']})",
    "JobUpdate.SnapshotFailed": lambda d: f"{d['instance']}: clean snapshot failed",
    "JobUpdate.ReadyForUpdate": lambda d: f"{d['instance']}: ready for update",
    "JobUpdate.InstancesCancelled": lambda d: f"not updated: {', '.join(d['instances'])} ({d['reason']})",
})


@main.command("update-job")
@_deployment_option
@click.argument("job")
@click.argument("index", required=False)
@click.option("--drain-type", type=click.Choice(["update", "shutdown"]), default="update", show_default=True,
              help="What the drain scripts are told (job_changed or job_shutdown).")
@click.option("--persistent-disk", type=click.IntRange(min=0), help="Next state's persistent disk size in MB "
              "(BOSH_JOB_NEXT_STATE).")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many instances may be drained/stopped/snapshotted at once.")
@_no_wait_option
@click.pass_context
def update_job(ctx: click.Context, deployment: str, job: str, index: str | None, drain_type: str,
               persistent_disk: int | None, max_in_flight: int, no_wait: bool) -> None:
    """Announce an update of JOB (or of one instance: JOB/INDEX, JOB/ID or JOB INDEX): drain, stop and
    clean-snapshot each instance, then report it ready for update.

    Waits until every instance is ready (exit 0) or one failed (exit 1)."""
    client: Client = ctx.obj["client"]
    job, index = split_instance(job, index)
    payload: dict[str, Any] = {"drain_type": drain_type, "max_in_flight": max_in_flight}
    if persistent_disk is not None:
        payload["next_state"] = {"persistent_disk": persistent_disk}
    base = f"/deployments/{deployment}/jobs/{job}" + (f"/{index}" if index is not None else "")
    accepted = call(lambda: client.request("POST", f"{base}/updates", payload))
    start_task(ctx, client, accepted, no_wait)
