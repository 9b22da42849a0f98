"""The ingress application, assembled from plain lists."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from receiver import metrics
from receiver.access import AccessLog
from receiver.allowed_networks import AllowedNetworks
from receiver.enqueue import Enqueuer
from receiver.gate import Gate
from receiver.headroom import Headroom
from receiver.health import healthz, readyz
from receiver.ingest import Endpoint
from receiver.limits import LogThrottle
from receiver.openapi import document, openapi
from receiver.throttle import RefusalBudget
from receiver.verify import Verifier
from uphooks import tracing
from uphooks.redis import async_client
from uphooks.redis_checks import check_redis_async
from uphooks.settings import Settings, get_settings

log = logging.getLogger("uphooks.receiver")


class _HidePathToken(logging.Filter):
    """Access log lines show ``<webhook path>/***`` instead of a token in the path."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and str(args[2]).startswith(self.prefix):
            record.args = (*args[:2], self.prefix + "***", *args[3:])
        return True


def _hide_path_tokens(prefix: str) -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _HidePathToken) and f.prefix == prefix for f in access.filters):
        access.addFilter(_HidePathToken(prefix))


def _announce(settings: Settings, verifier: Verifier) -> None:
    if verifier.open:
        log.warning(
            "!!! UPHOOKS_VERIFY=none: deliveries are NOT verified; anyone who can reach %s can "
            "inject events. For local development only: set UPHOOKS_VERIFY and UPHOOKS_SECRETS "
            "before exposing this ingress. !!!",
            settings.webhook_path,
        )
    else:
        log.info(
            "verifying deliveries with %s and %d secret(s)",
            ",".join(verifier.modes),
            verifier.secrets,
        )


class Ingress(Starlette):
    """The public app: requests to the webhook path pass its gate (receiver/gate.py), which
    sends a delivery straight to its endpoint; every other request gets its access line here."""

    gate: Gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif self.gate.covers(scope["path"]):
            scope["app"] = self
            await self.gate(super().__call__, scope, receive, send)
        else:
            await self.gate.access.around(super().__call__, scope, receive, send)


def create_app(settings: Settings | None = None) -> Ingress:
    settings = settings or get_settings()
    # Built here, not in the lifespan: a configuration that cannot work stops the start-up.
    verifier = Verifier.from_settings(settings)
    _announce(settings, verifier)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = async_client(settings)
        tracing.setup(settings, "ingress")
        # Redis settings the pipeline depends on (AOF, noeviction, ...): loud, never fatal.
        for finding in await check_redis_async(client, settings):
            log.log(finding.level, "%s", finding)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        headroom = Headroom(
            client, settings.redis_memory_limit_ratio, settings.redis_memory_poll_seconds
        )
        await headroom.start()
        # What exists now lives as long as the process: keep it out of every collection, and
        # collect the young generation less often (a request allocates a few dozen objects; a
        # collection with 64 requests in flight shows in the p99; docs/performance.md).
        gc.freeze()
        gc.set_threshold(10_000, 50, 100)
        app.state.redis = client
        app.state.enqueuer = enqueuer
        app.state.headroom = headroom
        try:
            yield
        finally:
            await headroom.stop()
            await enqueuer.stop()
            await client.aclose()
            tracing.shutdown()

    # The public listener: the webhook path and the liveness probe, nothing that describes us.
    endpoint = Endpoint()
    routes = [
        Route(settings.webhook_path, endpoint, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    token_prefix = None
    if verifier.takes_path_token:
        token_prefix = settings.webhook_path.rstrip("/") + "/"
        routes.append(Route(token_prefix + "{token}", endpoint, methods=["POST"]))
        _hide_path_tokens(token_prefix)  # uvicorn's line, where uvicorn runs the app itself
    app = Ingress(routes=routes, lifespan=lifespan)
    app.gate = Gate(
        settings.webhook_path,
        limit=settings.max_concurrent_requests,
        takes_token=verifier.takes_path_token,
        endpoint=endpoint,
        access=AccessLog(token_prefix),
    )
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.allowed_networks = AllowedNetworks(
        settings.allowed_networks, settings.trusted_proxies
    )
    app.state.log_throttle = LogThrottle()
    app.state.refusals = RefusalBudget(settings.refusal_burst, settings.refusal_rate_per_second)
    app.state.openapi = document(settings)
    return app


def create_admin_app(settings: Settings, public: Ingress) -> Starlette:
    """What operators read: metrics, the OpenAPI description, readiness with its details.

    Served on the admin listener only (UPHOOKS_ADMIN_HOST, 127.0.0.1 by default). It shares the
    public app's state (settings, the Redis client its lifespan opens).
    """
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if settings.serve_openapi:
        routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    if settings.metrics_enabled:
        routes.append(Route("/metrics", metrics.endpoint, methods=["GET"]))
    admin = Starlette(routes=routes)
    admin.state = public.state
    return admin


class Listeners:
    """One ASGI app for the two listening sockets of one process: a request that arrived on the
    admin port (its socket's own port, ``scope["server"]``, which no header can change) goes to
    the admin app, every other one to the public app. The public app runs the lifespan."""

    def __init__(self, public: Ingress, admin: Starlette, admin_port: int) -> None:
        self.public = public
        self.admin = admin
        self.admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "lifespan" and server and server[1] == self.admin_port:
            if scope["type"] == "http":
                await self.public.gate.access.around(self.admin, scope, receive, send)
            else:
                await self.admin(scope, receive, send)
        else:
            await self.public(scope, receive, send)


def create_listeners(settings: Settings | None = None) -> Listeners:
    settings = settings or get_settings()
    public = create_app(settings)
    return Listeners(public, create_admin_app(settings, public), settings.admin_port)


def app() -> Listeners:
    """Factory for ``uvicorn --factory receiver.app:app`` (what ``uphooks serve`` runs)."""
    return create_listeners()
