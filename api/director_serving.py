"""Where the bosh CLI is answered (decisions 22, 34): on the API's own port,
told apart by its User-Agent, by default; on a listener of its own
(`director.port`); or nowhere (`director.enabled: false`). The dialect itself
is `api/director.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
import ssl

from aiohttp import web

from snapledger.adapters.bootstrap import Runtime

from . import auth
from .director import create_director_app


def serve_director_dialect(app: web.Application, runtime: Runtime, ssl_context: ssl.SSLContext | None) -> None:
    """Where the bosh CLI is answered (decision 34): on the API's own port by
    default, on `director.port` alone when that is set, nowhere when
    `director.enabled` is false."""
    config = runtime.config  # both set: refused when the configuration is loaded
    if not config.director_enabled:
        return
    if config.director_port is not None:
        attach_director(app, runtime, config.host, config.director_port, ssl_context)
    else:
        attach_on_api_port(app, runtime)


def attach_director(app: web.Application, runtime: Runtime, host: str, port: int,
                    ssl_context: ssl.SSLContext | None) -> None:
    """Serve the Director dialect on `port` for the lifetime of the native `app`."""
    from .startup import bind_listener

    # A taken port: one line, before starting. Several API processes share it as they share the API's.
    sock = bind_listener(host, port, "the bosh Director dialect", reuse_port=runtime.config.api_processes > 1)

    async def listener(native: web.Application) -> AsyncIterator[None]:
        director = create_director_app(runtime, native.get(auth.AUTH))
        runner = web.AppRunner(director, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
        await site.start()
        runtime.log.info("bosh Director dialect listening", listen=f"{host}:{port}",
                         scheme="https" if ssl_context else "http")
        yield
        await runner.cleanup()

    app.cleanup_ctx.append(listener)


# The API's own port ---------------------------------------------------------------------------

DIALECT_HEADER = "X-Snapledger-Dialect"  # `director` or `native`: overrides what the User-Agent implies
BOSH_CLI_AGENT = "Go-http-client/"  # what the bosh CLI sends on every request and cannot change


async def speaks_director(request: web.Request, director: web.Application) -> bool:
    """The bosh CLI's requests: its User-Agent, on a path the Director dialect serves
    (`/health`, `/metrics`, `PUT /deployments/D`... stay native for every client)."""
    asked = request.headers.get(DIALECT_HEADER, "").strip().lower()
    if asked in ("director", "native"):
        return asked == "director"
    if not request.headers.get("User-Agent", "").startswith(BOSH_CLI_AGENT):
        return False
    return (await director.router.resolve(request)).http_exception is None


def attach_on_api_port(app: web.Application, runtime: Runtime) -> None:
    """Answer the bosh CLI on the native app's port: a middleware, after the native
    request id and access log, hands its requests to the Director app."""
    director = create_director_app(runtime, app.get(auth.AUTH))
    entry: list[Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]] = []

    async def director_runner(_native: web.Application) -> AsyncIterator[None]:
        # A runner of its own (no socket): it freezes the Director app and gives its
        # request entry point, which runs the Director's middlewares and router.
        runner = web.AppRunner(director, access_log=None)
        await runner.setup()
        assert runner.server is not None  # set up
        entry.append(runner.server.request_handler)
        yield
        await runner.cleanup()

    @web.middleware
    async def dialect(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        if entry and await speaks_director(request, director):
            # A clone: aiohttp has cached the native routing on this request. The Director
            # app resolves it on its own router and runs its own middlewares (request id,
            # access log, errors, auth), as its own listener would.
            return await entry[0](request.clone())
        return await handler(request)

    app.cleanup_ctx.append(director_runner)
    app.middlewares.insert(0, dialect)
    runtime.log.info("bosh Director dialect on the API port", user_agent=BOSH_CLI_AGENT + "*",
                     override_header=DIALECT_HEADER)
