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

from .cli_args import GlobalOptionsGroup, split_instance
from .cli_progress import EVENT_TEXTS, Progress, local_time, shorten
from .client import find_ca_cert, find_credentials, ApiError, Client, FollowLost
from .version import VERSION

DEFAULT_URL = "https://127.0.0.1:25555"  # HTTPS by default (issue 17)

# Exit codes (README "Exit codes"): a script tells "the task failed" from "we lost sight of it".
EXIT_FAILED = 1  # the request was refused, or the task ended in `error`
EXIT_USAGE = 2  # bad arguments or input; nothing was sent
EXIT_LOST = 3  # the service stayed unreachable while following: the task goes on, re-attach with `task ID`
EXIT_INTERRUPTED = 130  # Ctrl-C while following: the task goes on, re-attach with `task ID`


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


def call(fn: Callable[[], Any], forbidden_hint: str | None = None) -> Any:
    try:
        return fn()
    except ApiError as error:
        fail(f"{error.message} ({forbidden_hint})" if forbidden_hint and error.code == "forbidden"
             else error.message)


SCOPED_HINT = "a deployment's admin gives -d DEPLOYMENT"


def confirm(ctx: click.Context, question: str, what_goes: list[str] | None = None) -> None:
    """Ask before a destructive act (skipped with -n); show what goes away first."""
    if ctx.obj["non_interactive"]:
        return
    for line in what_goes or []:
        click.echo(line)
    try:
        agreed = click.confirm(question, default=False)
    except click.Abort:  # no answer (stdin closed): nothing was done
        click.echo("", err=True)
        fail("not confirmed, nothing done (pass -n to skip the question in scripts)", EXIT_FAILED)
    if not agreed:
        fail("not confirmed, nothing done", EXIT_FAILED)


def _no_wait_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--no-wait", is_flag=True, help="Print the task id and return at once; "
                        "follow it later with `snapledger task ID`.")(fn)


def start_task(ctx: click.Context, client: Client, accepted: dict[str, Any], no_wait: bool = False) -> None:
    """A command started a task: return at once (--no-wait) or follow it to its end."""
    if no_wait:
        emit(ctx, accepted, lambda a: f"Task {a['task_id']} started; follow it with `snapledger task {a['task_id']}`")
        return
    wait_for(ctx, client, accepted)


def wait_for(ctx: click.Context, client: Client, accepted: dict[str, Any]) -> None:
    """Follow a task to its end, one line per disk or step; exit non-zero unless it is `done`."""
    task_id = accepted["task_id"]
    label = accepted.get("number") or task_id  # the task's number, as in `bosh task N` (issue 17)
    as_json = ctx.obj["json"]
    progress = Progress()
    reattach = f"the task goes on in snapledger; re-attach with `snapledger task {task_id}`"
    told = False

    def show(event: dict[str, Any]) -> None:
        line = json.dumps(event) if as_json else progress.line(event)
        if line is not None:
            click.echo(line)

    def unavailable(error: ApiError, retry_in: float) -> None:
        nonlocal told
        if not told:  # once per outage, not once per retry
            click.echo(f"snapledger unavailable ({error.message}); {reattach}. Retrying "
                       f"(backoff from {retry_in:g} s, for up to {ctx.obj['reconnect_for']:g} s)...", err=True)
            told = True

    def back() -> None:
        nonlocal told
        click.echo(f"reconnected to snapledger; following task {task_id} again", err=True)
        told = False

    if not as_json:
        click.echo(f"Task {label}")  # a task's number where the service has them
    try:
        task = client.follow_task(task_id, show, unavailable, back, reconnect_for=ctx.obj["reconnect_for"])
    except FollowLost as lost:
        fail(f"lost contact with snapledger for {lost.waited_s:.0f} s ({lost.error.message}); {reattach}",
             EXIT_LOST)
    except ApiError as error:
        fail(error.message)
    except KeyboardInterrupt:
        click.echo("", err=True)
        fail(f"stopped following task {task_id}; {reattach}", EXIT_INTERRUPTED)
    finally:
        client.close()
    click.echo(json.dumps(task) if as_json else progress.summary(task))
    if not as_json and len(str(task.get("result") or "").splitlines()) > 1:
        click.echo(f"The full text of each CPI error: snapledger task {label} --cpi")
    if task["state"] != "done":
        sys.exit(EXIT_FAILED)


# Root ------------------------------------------------------------------------------

@click.group(cls=GlobalOptionsGroup)
@click.version_option(VERSION, "--version", prog_name="snapledger", message="%(prog)s %(version)s")
@click.option("--url", envvar="SNAPLEDGER_URL", default=DEFAULT_URL, show_default=True,
              help="The snapledger API (env SNAPLEDGER_URL).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--user", envvar="SNAPLEDGER_USER", help="User or API client name (env SNAPLEDGER_USER).")
@click.option("--secret", envvar="SNAPLEDGER_SECRET", help="Its secret (env SNAPLEDGER_SECRET).")
@click.option("--token", envvar="SNAPLEDGER_TOKEN", help="A bearer token (env SNAPLEDGER_TOKEN).")
@click.option("--credentials", "credentials_file", envvar="SNAPLEDGER_CREDENTIALS",
              help="Credentials file (default ./.snapledger/credentials.json, written by `serve`).")
@click.option("--ca-cert", envvar="SNAPLEDGER_CA_CERT", help="CA certificate to trust for https URLs.")
@click.option("-n", "--non-interactive", is_flag=True, help="Ask no questions (destructive acts go ahead).")
@click.option("--reconnect-for", type=click.FloatRange(min=0), default=120.0, show_default=True, metavar="SECONDS",
              help="While following a task, how long to retry an unavailable service before giving up (exit 3).")
@click.pass_context
def main(ctx: click.Context, url: str, as_json: bool, user: str | None, secret: str | None, token: str | None,
         credentials_file: str | None, ca_cert: str | None, non_interactive: bool, reconnect_for: float) -> None:
    """snapledger: an event-sourced ledger for persistent-disk snapshots.

    Global options (--json, -n, --url, ...) may also follow the command:
    `snapledger snapshots -d prod --json`. Exit codes: 0 done, 1 refused or the
    task failed, 2 bad usage, 3 lost contact while following (the task goes on),
    130 interrupted while following (the task goes on)."""
    authorization = find_credentials(user, secret, token, credentials_file)
    ctx.obj = {"client": Client(url, authorization=authorization, cafile=find_ca_cert(ca_cert, credentials_file)), "json": as_json,
               "non_interactive": non_interactive, "reconnect_for": reconnect_for}


@main.command()
def version() -> None:
    """Print snapledger's version (as `snapledger --version`)."""
    click.echo(f"snapledger {VERSION}")


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
                     help="Serve the bosh CLI's Director dialect on this port instead of the API's (decision 34)."),
        click.option("--no-director", "director_enabled", flag_value=False, default=None,
                     help="Do not answer the bosh CLI (by default the API port does, decision 34)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load(config_path: str | None, data_dir: Path | None, database: str | None, host: str | None,
          port: int | None, tls_cert: str | None = None, tls_key: str | None = None,
          tls_plain_http: bool | None = None, director_port: int | None = None,
          director_enabled: bool | None = None) -> Any:
    from snapledger.adapters.config import ConfigError, load_config
    from snapledger.adapters.logging import configure_logging

    try:
        overrides = {"tls_plain_http": tls_plain_http, "director_port": director_port,
                     "director_enabled": director_enabled}
        config = load_config(config_path, data_dir=data_dir, database=database, host=host, port=port,
                             tls_cert=tls_cert, tls_key=tls_key,
                             **{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as error:
        fail(str(error), 2)
    configure_logging(config.log_format, config.log_level)
    return config


def _run_server(roles: set[str], **options: Any) -> None:
    from .startup import StartupError

    try:
        _start_server(roles, **options)
    except StartupError as error:
        fail(error.message, error.exit_code)


def _start_server(roles: set[str], **options: Any) -> None:
    """Check what can refuse the start before starting anything: the data
    directory, the TLS files, the port; then the database (api/startup.py)."""
    from aiohttp import web

    from snapledger.adapters.store import parse_store_url
    from snapledger.adapters.wiring import build_runtime

    from .app import create_app
    from .startup import bind_listener, build_or_refuse, check_data_dir, tls_context

    config = _load(**options)
    check_data_dir(config.data_dir)
    ssl_context = tls_context(config) if "api" in roles else None
    sock = bind_listener(config.host, config.port) if "api" in roles else None
    if config.metrics_port and "api" not in roles:  # refuse a taken port in one line, before starting
        bind_listener("0.0.0.0", config.metrics_port, "metrics").close()
    label = parse_store_url(config.database_url).label
    runtime = build_or_refuse(lambda: build_runtime(config, roles), label)
    runtime.log.info("starting", store=runtime.url.label, data_dir=str(config.data_dir.resolve()),
                     listen=f"{config.host}:{config.port}" if "api" in roles else None,
                     scheme=None if "api" not in roles else ("https" if ssl_context else "http (--plain-http)"),
                     ca=str((config.data_dir / "ca.pem").resolve()) if ssl_context and not config.tls_cert else None)
    if "api" in roles:
        app = create_app(runtime)
        from .director import serve_director_dialect

        serve_director_dialect(app, runtime, ssl_context)
        web.run_app(app, sock=sock, print=None, ssl_context=ssl_context)
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
    job, index = split_instance(job, index)
    if job is None:
        return f"/deployments/{deployment}"
    if index is None:
        fail("give the instance as JOB/INDEX or JOB/ID (e.g. db/0), or nothing for the whole deployment", 2)
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
@_no_wait_option
@click.pass_context
def take_snapshot(ctx: click.Context, deployment: str | None, own_host: bool, job: str | None,
                  index: str | None, no_wait: bool) -> None:
    """Snapshot every persistent disk of one instance (JOB/INDEX, JOB/ID or JOB INDEX),
    or of the whole deployment."""
    client: Client = ctx.obj["client"]
    if own_host:
        path = "/self/snapshots"
    elif deployment:
        path = f"{_instance_path(deployment, job, index)}/snapshots"
    else:
        fail("give -d DEPLOYMENT (or --self)", 2)
    accepted = call(lambda: client.request("POST", path))
    start_task(ctx, client, accepted, no_wait)


SHOWN_BEFORE_CONFIRM = 20  # a deployment's hundreds of snapshots: the first ones and a count


def snapshot_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"  - {r['snapshot_cid']}  {r['job']}/{r['index'] if r['index'] is not None else '?'}  "
             f"disk {r['disk_cid']}  {local_time(r.get('created_at'), with_date=True)}  {r['trigger']}"
             for r in rows[:SHOWN_BEFORE_CONFIRM]]
    if len(rows) > SHOWN_BEFORE_CONFIRM:
        lines.append(f"  ... and {len(rows) - SHOWN_BEFORE_CONFIRM} more")
    return lines


def find_snapshot(client: Client, deployment: str, cid: str) -> dict[str, Any] | None:
    """The snapshot's row in its deployment's listing (None: let the command's own 404 say so)."""
    return next((r for r in call(lambda: list(client.paged(f"/deployments/{deployment}/snapshots")))
                 if r["snapshot_cid"] == cid), None)


@main.command("delete-snapshot")
@_deployment_option
@click.argument("cid")
@_no_wait_option
@click.pass_context
def delete_snapshot(ctx: click.Context, deployment: str, cid: str, no_wait: bool) -> None:
    """Delete one snapshot by its CID (asks first; -n does not)."""
    client: Client = ctx.obj["client"]
    if not ctx.obj["non_interactive"]:
        row = find_snapshot(client, deployment, cid)
        if row is not None:
            confirm(ctx, f"Delete snapshot {cid}?", ["Going away:", *snapshot_lines([row])])
    accepted = call(lambda: client.request("DELETE", f"/deployments/{deployment}/snapshots/{cid}"))
    start_task(ctx, client, accepted, no_wait)


@main.command("delete-snapshots")
@_deployment_option
@_no_wait_option
@click.pass_context
def delete_snapshots(ctx: click.Context, deployment: str, no_wait: bool) -> None:
    """Delete every snapshot of a deployment (asks first; -n does not)."""
    client: Client = ctx.obj["client"]
    if not ctx.obj["non_interactive"]:
        rows = call(lambda: list(client.paged(f"/deployments/{deployment}/snapshots")))
        confirm(ctx, f"Delete all {len(rows)} snapshot(s) of deployment '{deployment}'?",
                [f"Going away ({len(rows)} snapshot(s)):", *snapshot_lines(rows)])
    accepted = call(lambda: client.request("DELETE", f"/deployments/{deployment}/snapshots"))
    start_task(ctx, client, accepted, no_wait)


@main.command()
@click.pass_context
def schedules(ctx: click.Context) -> None:
    """Show each schedule, its next fire times and its last fire."""
    rows = call(lambda: ctx.obj["client"].get("/schedules"))

    def human(rs: list[dict[str, Any]]) -> str:
        lines = []
        for r in rs:
            state = "active" if r["active"] else ("off" if not r["expression"] else "inactive (snapshots disabled)")
            if r.get("managed_by"):
                state += f", managed by {r['managed_by']}"
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
    rows = call(lambda: ctx.obj["client"].get("/tasks", deployment=deployment, state=state, limit=limit),
                None if deployment else SCOPED_HINT)
    emit(ctx, rows, lambda rs: table(
        ["ID", "State", "Started At", "Finished At", "User", "Deployment", "Description", "Result"],
        [[r.get("number") or r["id"], r["state"], local_time(r["started_at"], with_date=True),
          local_time(r["finished_at"], with_date=True), r["user"] or "-", r["deployment"] or "-",
          shorten(r["description"], TASKS_TEXT_WIDTH), shorten(r["result"], TASKS_TEXT_WIDTH)] for r in rs],
        f"{len(rs)} tasks (results shortened; `snapledger task ID` shows one in full)"))


TASKS_TEXT_WIDTH = 60  # a result listing a deployment's CIDs would make every row a page wide


@main.command()
@click.argument("task_id", required=False)
@click.option("-d", "--deployment", help="Without TASK_ID: the latest task of this deployment.")
@click.option("--cpi", "cpi_log", is_flag=True, help="Show the task's CPI calls with their log and stderr.")
@click.pass_context
def task(ctx: click.Context, task_id: str | None, deployment: str | None, cpi_log: bool) -> None:
    """Show one task (the latest without TASK_ID) and its steps; follows it while it runs."""
    client: Client = ctx.obj["client"]
    if task_id is None:
        latest = call(lambda: client.get("/tasks", limit=1, deployment=deployment),
                      None if deployment else SCOPED_HINT)
        if not latest:
            fail("no tasks yet")
        task_id = latest[0]["id"]
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
FEATURE_MODULES: list[str] = ["cli_retention", "cli_audit", "cli_replay", "cli_jobs", "cli_restore", "cli_cancel"]
for _module in FEATURE_MODULES:
    __import__(f"{__package__}.{_module}")

if __name__ == "__main__":  # pragma: no cover
    main()
