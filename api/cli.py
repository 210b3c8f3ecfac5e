"""`snapledger`: the service's processes and a client named after BOSH's commands."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click
import yaml

from .client import find_ca_cert, find_credentials, ApiError, Client

DEFAULT_URL = "https://127.0.0.1:25555"  # HTTPS by default (issue 17)


# Output --------------------------------------------------------------------------

def table(headers: list[str], rows: list[list[Any]], footer: str) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), *(line(r) for r in cells), "", footer])


def emit(ctx: click.Context, data: Any, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2) if ctx.obj["json"] else human(data))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ApiError as error:
        fail(error.message)


# Feature modules add how their events read (event type -> text from the event's data).
EVENT_TEXTS: dict[str, Callable[[dict[str, Any]], str]] = {}


def describe_event(event: dict[str, Any]) -> str:
    data, kind = event["data"], event["type"]
    where = f"{data.get('job', '')}/{data.get('index', '')} disk {data.get('disk_cid', '')}".strip()
    text = {
        "Task.Queued": lambda: f"queued: {data.get('description')} ({len(data.get('operations', []))} operation(s))",
        "Task.Started": lambda: f"started by {data.get('worker')}",
        "Task.OperationsAdded": lambda: f"{len(data.get('operations', []))} operation(s) added",
        "Task.OperationFinished": lambda: _operation(data),
        "Task.Finished": lambda: f"{data.get('state')}: {data.get('result')}",
        "Snapshot.Requested": lambda: f"snapshot requested: {where}",
        "Snapshot.CpiCallStarted": lambda: f"CPI {data.get('method')} started (attempt {data.get('attempt')})",
        "Snapshot.Taken": lambda: f"snapshot taken: {data.get('snapshot_cid')}",
        "Snapshot.Failed": lambda: f"snapshot failed: {data['error']['type']}: {data['error']['message']}",
        "Snapshot.Skipped": lambda: f"snapshot skipped: {data.get('reason')}",
        "Snapshot.DeletionRequested": lambda: "deletion requested",
        "Snapshot.Deleted": lambda: f"snapshot deleted ({data.get('reason')})",
        "Snapshot.DeletionFailed": lambda: f"deletion failed: {data['error']['type']}: {data['error']['message']}",
    }.get(kind, lambda: EVENT_TEXTS[kind](data) if kind in EVENT_TEXTS else kind)()
    return f"{event['time'][11:19]}  {text}"


def _operation(data: dict[str, Any]) -> str:
    detail = data.get("detail", {})
    text = f"{detail.get('instance', '?')} disk {detail.get('disk_cid', '?')}: {data.get('outcome')}"
    if detail.get("snapshot_cid"):
        text += f" {detail['snapshot_cid']}"
    if detail.get("error_type"):
        text += f" ({detail['error_type']}: {detail.get('message', '')})"
    elif detail.get("reason"):
        text += f" ({detail['reason']})"
    return text


def wait_for(ctx: click.Context, client: Client, accepted: dict[str, Any]) -> None:
    """Follow a task to its end, showing each step; exit non-zero on `error`."""
    task_id = accepted["task_id"]
    label = accepted.get("number") or task_id  # the task's number, as in `bosh task N` (issue 17)
    as_json = ctx.obj["json"]
    if not as_json:
        click.echo(f"Task {label}")
    task = call(lambda: client.follow_task(
        task_id, lambda e: click.echo(json.dumps(e) if as_json else describe_event(e))))
    if as_json:
        click.echo(json.dumps(task))
    else:
        click.echo(f"\nTask {label} {task['state']}: {task['result']}")
    if task["state"] != "done":
        sys.exit(1)


# Root ------------------------------------------------------------------------------

@click.group()
@click.option("--url", envvar="SNAPLEDGER_URL", default=DEFAULT_URL, show_default=True,
              help="The snapledger API (env SNAPLEDGER_URL).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--user", envvar="SNAPLEDGER_USER", help="User or API client name (env SNAPLEDGER_USER).")
@click.option("--secret", envvar="SNAPLEDGER_SECRET", help="Its secret (env SNAPLEDGER_SECRET).")
@click.option("--token", envvar="SNAPLEDGER_TOKEN", help="A bearer token (env SNAPLEDGER_TOKEN).")
@click.option("--credentials", "credentials_file", envvar="SNAPLEDGER_CREDENTIALS",
              help="Credentials file (default ./.snapledger/credentials.json, written by `serve`).")
@click.option("--ca-cert", envvar="SNAPLEDGER_CA_CERT", help="CA certificate to trust for https URLs.")
@click.pass_context
def main(ctx: click.Context, url: str, as_json: bool, user: str | None, secret: str | None, token: str | None,
         credentials_file: str | None, ca_cert: str | None) -> None:
    """snapledger: an event-sourced ledger for persistent-disk snapshots."""
    authorization = find_credentials(user, secret, token, credentials_file)
    ctx.obj = {"client": Client(url, authorization=authorization, cafile=find_ca_cert(ca_cert, credentials_file)),
               "json": as_json}


# Processes ---------------------------------------------------------------------------

def _server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SNAPLEDGER_CONFIG",
                     help="YAML configuration file."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Where the embedded database, disks and snapshots live (default ./.snapledger)."),
        click.option("--database", help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB?schema=NAME"),
        click.option("--host", help="Bind address (default 127.0.0.1)."),
        click.option("--port", type=int, help="Port (default 25555)."),
        click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), envvar="SNAPLEDGER_TLS_CERT",
                     help="Serve HTTPS with this certificate (PEM)."),
        click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), envvar="SNAPLEDGER_TLS_KEY",
                     help="The certificate's private key (PEM)."),
        click.option("--plain-http", "tls_plain_http", is_flag=True, default=None,
                     help="Serve plain HTTP (only behind a TLS proxy). Default: HTTPS with D/ca.pem."),
        click.option("--director-port", type=int,
                     help="Also serve the BOSH Director dialect for the bosh CLI on this port (decision 22)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load(config_path: str | None, data_dir: Path | None, database: str | None, host: str | None,
          port: int | None, tls_cert: str | None = None, tls_key: str | None = None,
          tls_plain_http: bool | None = None, director_port: int | None = None) -> Any:
    from snapledger.adapters.config import ConfigError, load_config
    from snapledger.adapters.logging import configure_logging

    try:
        overrides = {"tls_plain_http": tls_plain_http, "director_port": director_port}
        config = load_config(config_path, data_dir=data_dir, database=database, host=host, port=port,
                             tls_cert=tls_cert, tls_key=tls_key, **{k: v for k, v in overrides.items() if v})
    except ConfigError as error:
        fail(str(error), 2)
    configure_logging(config.log_format, config.log_level)
    return config


def _run_server(roles: set[str], **options: Any) -> None:
    from aiohttp import web

    from snapledger.adapters.wiring import build_runtime

    from .app import create_app

    config = _load(**options)
    runtime = build_runtime(config, roles)
    runtime.log.info("starting", store=runtime.url.label, data_dir=str(config.data_dir.resolve()),
                     listen=f"{config.host}:{config.port}" if "api" in roles else None)
    if "api" in roles:
        app = create_app(runtime)
        ssl_context = _tls_context(config, runtime.log)
        if config.director_port is not None:
            from .director import attach_director

            attach_director(app, runtime, config.host, config.director_port, ssl_context)
        web.run_app(app, host=config.host, port=config.port, print=None, ssl_context=ssl_context)
        return
    if config.metrics_port:
        from snapledger.adapters.metrics import serve_metrics

        serve_metrics(config.metrics_port)
    stop = __import__("threading").Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runtime.start()
    stop.wait()
    runtime.close()


def _tls_context(config: Any, log: Any) -> Any:
    """HTTPS unless plain HTTP was asked for: the given certificate, else our own CA's (adapters/tls.py)."""
    import ssl

    if (config.tls_cert or config.tls_key) and not (config.tls_cert and config.tls_key):
        fail("TLS needs both --tls-cert and --tls-key", 2)
    if config.tls_plain_http:
        if config.tls_cert:
            fail("--plain-http and --tls-cert/--tls-key exclude each other", 2)
        log.warning("serving plain HTTP, as asked (--plain-http): put a TLS proxy in front")
        return None
    cert, key = config.tls_cert, config.tls_key
    if not cert:
        from snapledger.adapters.tls import default_names, ensure_certificate

        own = ensure_certificate(config.data_dir, default_names(config.host, config.tls_names))
        cert, key = str(own.cert), str(own.key)
        log.info("serving HTTPS with the service's own CA; clients trust it", ca=str(own.ca.resolve()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@main.command("hash-secret")
@click.option("--secret", prompt=True, hide_input=True, confirmation_prompt=True)
def hash_secret_command(secret: str) -> None:
    """Print the argon2 hash of a secret, for `auth.users` in the configuration."""
    from .auth import hash_secret

    click.echo(hash_secret(secret))


@main.command()
@_server_options
def serve(**options: Any) -> None:
    """API, worker, projector and scheduler in one process (the embedded default)."""
    _run_server({"api", "worker", "projector", "scheduler"}, **options)


@main.command()
@_server_options
def api(**options: Any) -> None:
    """Only the HTTP API (scale out against one PostgreSQL)."""
    _run_server({"api"}, **options)


@main.command()
@_server_options
def worker(**options: Any) -> None:
    """Only the worker that executes snapshot operations through the CPI."""
    _run_server({"worker"}, **options)


@main.command()
@_server_options
def projector(**options: Any) -> None:
    """Only the projector that maintains the listing, task and deployment views."""
    _run_server({"projector"}, **options)


@main.command()
@_server_options
def scheduler(**options: Any) -> None:
    """Only the scheduler (run as many replicas as you like: each fire is recorded once)."""
    _run_server({"scheduler"}, **options)


# Client commands -------------------------------------------------------------------------

def _deployment_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-d", "--deployment", required=True, envvar="SNAPLEDGER_DEPLOYMENT",
                        help="Deployment name (env SNAPLEDGER_DEPLOYMENT).")(fn)


def _instance_path(deployment: str, job: str | None, index: str | None) -> str:
    if job is None:
        return f"/deployments/{deployment}"
    if index is None:
        fail("give both JOB and INDEX (or an instance id), or neither for the whole deployment", 2)
    return f"/deployments/{deployment}/jobs/{job}/{index}"


@main.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Show the service's name, version and whether snapshots are enabled."""
    data = call(lambda: ctx.obj["client"].get("/info"))
    emit(ctx, data, lambda d: "\n".join([
        f"Name       {d['name']}", f"UUID       {d['uuid']}", f"Version    {d['version']}",
        f"CPI        {d['cpi']}", f"Snapshots  {'enabled' if d['features']['snapshots']['status'] else 'disabled'}",
    ]))


@main.command("enable-snapshots")
@click.pass_context
def enable_snapshots(ctx: click.Context) -> None:
    """Turn snapshots on (they are off by default)."""
    data = call(lambda: ctx.obj["client"].request("PUT", "/config/snapshots", {"enable_snapshots": True}))
    emit(ctx, data, lambda d: "Snapshots enabled")


@main.command("disable-snapshots")
@click.pass_context
def disable_snapshots(ctx: click.Context) -> None:
    """Turn snapshots off: new snapshot requests are refused."""
    data = call(lambda: ctx.obj["client"].request("PUT", "/config/snapshots", {"enable_snapshots": False}))
    emit(ctx, data, lambda d: "Snapshots disabled")


@main.command()
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
        fail(f"{file.name}: {error.normalized_messages()}", 2)
    name = spec.pop("name")
    data = call(lambda: ctx.obj["client"].request("PUT", f"/deployments/{name}", spec))
    disks = sum(len(i["disks"]) for i in data["instances"])
    emit(ctx, data, lambda d: f"Deployment '{name}' recorded: {len(d['instances'])} instance(s), {disks} disk(s)")


@main.command()
@click.pass_context
def deployments(ctx: click.Context) -> None:
    """List deployments."""
    data = call(lambda: ctx.obj["client"].get("/deployments"))
    emit(ctx, data, lambda rows: table(
        ["Name", "Instances", "Disks", "Snapshots", "Tags"],
        [[d["name"], len(d["instances"]), sum(len(i["disks"]) for i in d["instances"]), d["snapshots"],
          ",".join(f"{k}={v}" for k, v in sorted(d["tags"].items()))] for d in rows],
        f"{len(rows)} deployments"))


@main.command()
@_deployment_option
@click.argument("job", required=False)
@click.argument("index", required=False)
@click.option("--at", help="The listing as it was at this ISO time, e.g. 2026-11-24T07:00:00Z.")
@click.pass_context
def snapshots(ctx: click.Context, deployment: str, job: str | None, index: str | None, at: str | None) -> None:
    """List a deployment's snapshots (or one instance's), now or --at a moment."""
    client: Client = ctx.obj["client"]
    base = _instance_path(deployment, job, index) if job else f"/deployments/{deployment}"
    rows = call(lambda: client.get(f"{base}/snapshots", at=at) if at else list(client.paged(f"{base}/snapshots")))
    emit(ctx, rows, lambda rs: table(
        ["Instance", "Disk", "CID", "Created At", "Clean", "Trigger"],
        [[f"{r['job']}/{r['index'] if r['index'] is not None else '?'}", r["disk_cid"], r["snapshot_cid"],
          r["created_at"], str(r["clean"]).lower(), r["trigger"]] for r in rs],
        f"{len(rs)} snapshots"))


@main.command("take-snapshot")
@click.option("-d", "--deployment", envvar="SNAPLEDGER_DEPLOYMENT", help="Deployment name.")
@click.option("--self", "own_host", is_flag=True, help="Snapshot the disks of the host snapledger runs on.")
@click.argument("job", required=False)
@click.argument("index", required=False)
@click.pass_context
def take_snapshot(ctx: click.Context, deployment: str | None, own_host: bool, job: str | None,
                  index: str | None) -> None:
    """Snapshot every persistent disk of one instance, or of the whole deployment."""
    client: Client = ctx.obj["client"]
    if own_host:
        path = "/self/snapshots"
    elif deployment:
        path = f"{_instance_path(deployment, job, index)}/snapshots"
    else:
        fail("give -d DEPLOYMENT (or --self)", 2)
    accepted = call(lambda: client.request("POST", path))
    wait_for(ctx, client, accepted)


@main.command("delete-snapshot")
@_deployment_option
@click.argument("cid")
@click.pass_context
def delete_snapshot(ctx: click.Context, deployment: str, cid: str) -> None:
    """Delete one snapshot by its CID."""
    client: Client = ctx.obj["client"]
    accepted = call(lambda: client.request("DELETE", f"/deployments/{deployment}/snapshots/{cid}"))
    wait_for(ctx, client, accepted)


@main.command("delete-snapshots")
@_deployment_option
@click.option("-n", "--non-interactive", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete_snapshots(ctx: click.Context, deployment: str, non_interactive: bool) -> None:
    """Delete every snapshot of a deployment."""
    if not non_interactive and not click.confirm(f"Delete all snapshots of deployment '{deployment}'?"):
        fail("aborted", 1)
    client: Client = ctx.obj["client"]
    accepted = call(lambda: client.request("DELETE", f"/deployments/{deployment}/snapshots"))
    wait_for(ctx, client, accepted)


@main.command()
@click.pass_context
def schedules(ctx: click.Context) -> None:
    """Show each schedule, its next fire times and its last fire."""
    rows = call(lambda: ctx.obj["client"].get("/schedules"))

    def human(rs: list[dict[str, Any]]) -> str:
        lines = []
        for r in rs:
            state = "active" if r["active"] else ("off" if not r["expression"] else "inactive (snapshots disabled)")
            lines.append(f"{r['name']}: {r['expression'] or '-'}  [{state}]")
            for t in r["next_fires"]:
                lines.append(f"  next   {t}")
            last = r["last_fire"]
            lines.append(f"  last   {last['fire_time']} tasks {', '.join(last['tasks']) or '-'}" if last
                         else "  last   never fired")
            if r["last_missed"]:
                lines.append(f"  missed {r['last_missed']['fire_time']} (latest missed fire)")
        return "\n".join(lines)

    emit(ctx, rows, human)


@main.command("set-schedule")
@click.argument("name", type=click.Choice(["snapshot_schedule", "self_snapshot_schedule", "retention_schedule"]))
@click.argument("expression")
@click.pass_context
def set_schedule(ctx: click.Context, name: str, expression: str) -> None:
    """Set a schedule in BOSH cron syntax (e.g. '0 0 7 * * * UTC'), or 'off'."""
    data = call(lambda: ctx.obj["client"].request("PUT", "/config/snapshots", {name: expression}))
    emit(ctx, data, lambda d: f"{name}: {d[name] or 'off'}")


@main.command()
@click.option("-d", "--deployment", help="Only this deployment's tasks.")
@click.option("--state", type=click.Choice(["queued", "processing", "cancelling", "done", "error", "cancelled"]))
@click.option("--limit", type=int, default=30, show_default=True)
@click.option("--in-doubt", "in_doubt", is_flag=True, help="Only tasks with in-doubt CPI calls.")
@click.pass_context
def tasks(ctx: click.Context, deployment: str | None, state: str | None, limit: int, in_doubt: bool) -> None:
    """List recent tasks, newest first."""
    if in_doubt:
        rows = call(lambda: ctx.obj["client"].get("/tasks", in_doubt="true"))
        emit(ctx, rows, lambda rs: table(
            ["Task", "State", "Deployment", "Operation", "Disk", "Method", "Worker", "Since"],
            [[r["id"], r["state"], op["deployment"], op["operation_id"], op["disk_cid"], op["method"],
              op["worker"], op["since"]] for r in rs for op in r["in_doubt"]],
            f"{sum(len(r['in_doubt']) for r in rs)} in-doubt CPI calls (look for IaaS snapshots tagged "
            "snapledger_operation_id=<Operation>)"))
        return
    rows = call(lambda: ctx.obj["client"].get("/tasks", deployment=deployment, state=state, limit=limit))
    emit(ctx, rows, lambda rs: table(
        ["ID", "State", "Started At", "Finished At", "User", "Deployment", "Description", "Result"],
        [[r.get("number") or r["id"], r["state"], r["started_at"], r["finished_at"], r["user"], r["deployment"],
          r["description"], r["result"]] for r in rs],
        f"{len(rs)} tasks"))


@main.command()
@click.argument("task_id")
@click.option("--cpi", "cpi_log", is_flag=True, help="Show the task's CPI calls with their log and stderr.")
@click.pass_context
def task(ctx: click.Context, task_id: str, cpi_log: bool) -> None:
    """Show one task and its events; waits while it runs."""
    client: Client = ctx.obj["client"]
    if cpi_log:
        entries = call(lambda: client.get(f"/tasks/{task_id}/cpi-log"))
        emit(ctx, entries, describe_cpi_log)
        return
    wait_for(ctx, client, {"task_id": task_id})


def describe_cpi_log(entries: list[dict[str, Any]]) -> str:
    lines = []
    for e in entries:
        answer = (f"error {e['error']['type']}: {e['error']['message']}" if e.get("error")
                  else f"ok {e['snapshot_cid'] or ''}".rstrip())
        lines.append(f"{e['time']} {e['cpi']} {e['method']} request {e['request_id'] or '-'} "
                     f"({e['duration_s']} s): {answer}")
        for name in ("log", "stderr"):
            for line in (e.get(name) or "").splitlines():
                lines.append(f"    {name}: {line}")
    return "\n".join(lines) or "no CPI calls"


# Feature command modules register themselves on `main` when imported (they
# import `main` and the helpers above, so they come last).
FEATURE_MODULES: list[str] = ["cli_retention", "cli_audit", "cli_replay", "cli_jobs", "cli_restore"]
for _module in FEATURE_MODULES:
    __import__(f"{__package__}.{_module}")

if __name__ == "__main__":  # pragma: no cover
    main()
