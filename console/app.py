"""The operator console: a Starlette app rendered on the server (Jinja2), its own process.

Assembled from plain lists, the Starlette way. The lifespan opens the Redis client and starts
the two background threads (bulk replay jobs, the Overview's samples). ``create_app`` refuses
to build an app no one could sign in to (console/credentials.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

import redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import actions, audit_page, deadletters, events, handlers_page, overview, signin
from console.audit import Audit
from console.bulk import Jobs, Runner
from console.credentials import require_configured
from console.series import Sampler, Series
from console.sessions import Sessions
from console.state import Console, console_of
from console.store import ConsoleStore
from console.templating import install_filters
from receiver.allowed_networks import AllowedNetworks
from uphooks.keys import Keys
from uphooks.redis import sync_client
from uphooks.settings import Settings, get_settings
from uphooks.settings_redis import masked_url
from workers.deadletter import DeadLetters

log = logging.getLogger("uphooks.console")

# Scripts and styles from this origin only (no inline script at all), no framing, no
# referrer to other sites, nothing cached: pages show personal data and CSRF tokens.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.headers = list(SECURITY_HEADERS)
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (n, v) for n, v in self.headers if n not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


async def redis_down(request: Request, exc: Exception) -> Response:
    settings = console_of(request).settings
    log.warning("console: Redis unreachable: %s", exc)
    return PlainTextResponse(
        f"Redis at {masked_url(settings.redis_url)} does not answer ({type(exc).__name__}); "
        "the pipeline's state cannot be read. Try again shortly.",
        status_code=503,
        headers={"Retry-After": "5"},
    )


def home(request: Request) -> Response:
    return RedirectResponse(console_of(request).url(request, "/events"), status_code=303)


def healthz(request: Request) -> Response:
    return Response("ok", media_type="text/plain")


# GET (and HEAD) pages, in match order: a fixed path before the pattern that would take it.
_PAGES = {
    "/": home,
    "/healthz": healthz,
    "/login": signin.login_form,
    "/events": events.events,
    "/events/rows": events.rows,
    "/lookup": events.lookup,
    "/events/{key:path}": events.event,
    "/dead-letters": deadletters.dead_letters,
    "/dead-letters/estimate": deadletters.estimate,
    "/dead-letters/jobs/{job_id}": deadletters.job,
    "/overview": overview.overview,
    "/handlers": handlers_page.handlers,
    "/audit": audit_page.audit,
}
# POST actions. A POST to a page's path still finds its action: a route whose method does not
# match only counts when no later route matches fully.
_ACTIONS = {
    "/login": signin.login,
    "/logout": signin.logout,
    "/events/{key:path}/replay": actions.replay_one,
    "/events/{key:path}/replay-failed": actions.replay_failed,
    "/events/{key:path}/erase": actions.erase,
    "/dead-letters/bulk": actions.bulk_start,
    "/dead-letters/purge": actions.purge,
    "/dead-letters/jobs/{job_id}/cancel": actions.bulk_cancel,
}
ROUTES: list[BaseRoute] = [
    *(Route(path, endpoint, methods=["GET"]) for path, endpoint in _PAGES.items()),
    *(Route(path, endpoint, methods=["POST"]) for path, endpoint in _ACTIONS.items()),
    Mount(
        "/static", StaticFiles(directory=str(files("console").joinpath("static"))), name="static"
    ),
]


def build_console(settings: Settings) -> Console:
    credentials = require_configured(settings)
    client = sync_client(settings)
    keys = Keys(settings.key_prefix)
    store = ConsoleStore(client, keys, settings.dedup_ttl_seconds)
    templates = Jinja2Templates(directory=str(files("console").joinpath("templates")))
    install_filters(templates.env)
    return Console(
        settings=settings,
        client=client,
        keys=keys,
        store=store,
        credentials=credentials,
        sessions=Sessions(client, settings),
        audit=Audit(client, settings.key_prefix),
        templates=templates,
        sources=AllowedNetworks([], settings.trusted_proxies),
        jobs=Jobs(client, settings, store),
        dead_letters=DeadLetters(client, keys, settings.dlq_retention_seconds),
        series=Series(client, settings),
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    con = build_console(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runner = Runner(con.jobs)
        sampler = Sampler(con.series, settings.console_sample_seconds)
        runner.start()
        sampler.start()
        log.info("console up; sign-in by %s", "users and tokens")
        try:
            yield
        finally:
            runner.stop()
            sampler.stop()
            con.client.close()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SecurityHeaders, hsts=settings.console_secure_cookies)],
        lifespan=lifespan,
        exception_handlers={redis.RedisError: redis_down},
    )
    app.state.console = con
    return app
