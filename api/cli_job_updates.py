"""`snapledger update-job`: announce a job update and follow it until every instance is ready."""

from __future__ import annotations

from typing import Any

import click

from .cli_args import deployment_option, no_wait_option, split_instance
from .cli_output import call
from .cli_tasks import start_task
from .client import Client


@click.command("update-job")
@deployment_option
@click.argument("job")
@click.argument("index", required=False)
@click.option("--drain-type", type=click.Choice(["update", "shutdown"]), default="update", show_default=True,
              help="What the drain scripts are told (job_changed or job_shutdown).")
@click.option("--persistent-disk", type=click.IntRange(min=0), help="Next state's persistent disk size in MB "
              "(BOSH_JOB_NEXT_STATE).")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many instances may be drained/stopped/snapshotted at once.")
@no_wait_option
@click.pass_context
def update_job(ctx: click.Context, deployment: str, job: str, index: str | None, drain_type: str,
               persistent_disk: int | None, max_in_flight: int, no_wait: bool) -> None:
    """Announce an update of JOB (or of one instance: JOB/INDEX, JOB/ID or JOB INDEX): drain, stop and
    clean-snapshot each instance, then report it ready for update.

    Waits until every instance is ready (exit 0) or one failed (exit 1)."""
    client: Client = ctx.obj["client"]
    name, index = split_instance(job, index)
    payload: dict[str, Any] = {"drain_type": drain_type, "max_in_flight": max_in_flight}
    if persistent_disk is not None:
        payload["next_state"] = {"persistent_disk": persistent_disk}
    base = f"/deployments/{deployment}/jobs/{name}" + (f"/{index}" if index is not None else "")
    accepted = call(lambda: client.request("POST", f"{base}/updates", payload))
    start_task(ctx, client, accepted, no_wait)


COMMANDS: tuple[click.Command, ...] = (update_job,)
