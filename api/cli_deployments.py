"""CLI: deployments (`deploy FILE.yml`, `deployments`)."""

from __future__ import annotations

from typing import Any

import click
import yaml

from .cli_output import call, confirm, emit, fail, table
from .client import ApiError, Client


@click.command()
@click.argument("file", type=click.File("r"))
@click.pass_context
def deploy(ctx: click.Context, file: Any) -> None:
    """Record a deployment's inventory from FILE.yml (name, tags, instances)."""
    from marshmallow import ValidationError

    from .schemas import DeploymentFileSchema

    try:
        raw = yaml.safe_load(file)
        spec = DeploymentFileSchema().load(raw if isinstance(raw, dict) else {})
    except yaml.YAMLError as error:
        fail(f"{file.name} is not valid YAML: {error}", 2)
    except ValidationError as error:
        fail(f"{file.name}: {error.normalized_messages()}", 2)  # type: ignore[no-untyped-call]
    name = spec.pop("name")
    client: Client = ctx.obj["client"]
    gone = _removed_by_deploy(client, name, spec)
    if gone:
        confirm(ctx, f"Deploying {file.name} removes {len(gone)} instance(s) from deployment '{name}'. Continue?",
                [f"Going away from deployment '{name}' (their snapshots stay listed):", *gone])
    data = call(lambda: client.request("PUT", f"/deployments/{name}", spec))
    disks = sum(len(i["disks"]) for i in data["instances"])
    emit(ctx, data, lambda d: f"Deployment '{name}' recorded: {len(d['instances'])} instance(s), {disks} disk(s)")


def _removed_by_deploy(client: Client, name: str, spec: dict[str, Any]) -> list[str]:
    """The instances (with their disks) the deployment has now and the new inventory lacks."""
    try:
        current = client.get(f"/deployments/{name}")
    except ApiError as error:
        if error.status == 404:
            return []  # a new deployment: nothing goes away
        fail(error.message)
    keep = {(i["job"], i["index"]) for i in spec.get("instances", [])}
    return [f"  - {i['job']}/{i['index']} (disks: {', '.join(i['disks']) or 'none'})"
            for i in current.get("instances", []) if (i["job"], i["index"]) not in keep]


@click.command()
@click.pass_context
def deployments(ctx: click.Context) -> None:
    """List deployments."""
    data = call(lambda: ctx.obj["client"].get("/deployments"))
    emit(ctx, data, lambda rows: table(
        ["Name", "Instances", "Disks", "Snapshots", "Tags"],
        [[d["name"], len(d["instances"]), sum(len(i["disks"]) for i in d["instances"]), d["snapshots"],
          ",".join(f"{k}={v}" for k, v in sorted(d["tags"].items()))] for d in rows],
        f"{len(rows)} deployments"))


COMMANDS: tuple[click.Command, ...] = (deploy, deployments)
