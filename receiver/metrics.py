"""The ingress's metrics: webhook requests by status and their time to acknowledge (an ASGI
middleware), duplicates, enqueue failures, connections closed, and ``GET /metrics`` on the
admin listener. The series are defined in ``uphooks/metrics.py``."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uphooks.collector import queues_of, registry, scrape_client
from uphooks.metrics import metrics, never_raises
from uphooks.redis import sync_client
from uphooks.settings import Settings


class IngressMetrics:
    """ASGI middleware: count webhook requests by status and time their acknowledgement.

    ``path`` is the webhook path; ``<path>/<token>`` counts too. Put it outermost, so requests
    refused by other middleware (concurrency limit) are counted as well.
    """

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path
        self.prefix = path.rstrip("/") + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (
            scope["path"] == self.path or scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                _record_request(status, time.perf_counter() - start)
                start_seen.append(True)
            await send(message)

        start_seen: list[bool] = []
        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not start_seen:  # the app raised before answering: the server answers 500
                _record_request(status, time.perf_counter() - start)


@never_raises
def _record_request(status: int, seconds: float) -> None:
    m = metrics()
    m.requests.labels(str(status)).inc()
    m.ack_seconds.observe(seconds)


@never_raises
def duplicate() -> None:
    """A delivery that was already known (answered 200)."""
    metrics().duplicates.inc()


@never_raises
def refused_redis_full() -> None:
    """A delivery answered 503 because Redis was nearly full (receiver/headroom.py)."""
    metrics().redis_full.inc()


@never_raises
def enqueue_failed(reason: str) -> None:
    """Redis did not keep a delivery: ``timeout``, ``error`` or ``oom``."""
    metrics().enqueue_failures.labels(reason).inc()


@never_raises
def connection_closed(reason: str) -> None:
    """The ingress ended a connection itself (receiver/connections.py says why)."""
    metrics().connections_closed.labels(reason).inc()


_scrape_registry: CollectorRegistry | None = None


def _ingress_registry(settings: Settings) -> CollectorRegistry:
    global _scrape_registry
    if _scrape_registry is None:
        client = scrape_client(
            sync_client(settings, timeout=min(2.0, settings.ack_timeout_seconds))
        )
        _scrape_registry = registry(settings, client, queues_of(settings))
    return _scrape_registry


async def endpoint(request: Request) -> Response:
    """``GET /metrics`` on the ingress (Prometheus text format)."""
    settings: Settings = request.app.state.settings
    # Merging files and reading Redis block: off the event loop.
    body = await run_in_threadpool(lambda: generate_latest(_ingress_registry(settings)))
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})
