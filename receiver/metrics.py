"""The ingress's metrics: webhook requests by status and their time to acknowledge (counted by
receiver/gate.py), duplicates, enqueue failures, connections closed, and ``GET /metrics`` on the
admin listener. The series are defined in ``uphooks/metrics.py``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from uphooks.collector import queues_of, registry, scrape_client
from uphooks.metrics import metrics, never_raises
from uphooks.redis import sync_client
from uphooks.settings import Settings


@never_raises
def record_request(status: int, seconds: float) -> None:
    """One webhook request answered with ``status``, ``seconds`` after it arrived
    (receiver/gate.py counts every request to the webhook path)."""
    m = metrics()
    counters = _by_status.get(id(m))
    if counters is None:
        counters = _by_status[id(m)] = {}
    counter = counters.get(status)
    if counter is None:
        counter = counters[status] = m.requests.labels(str(status))
    counter.inc()
    m.ack_seconds.observe(seconds)


# The labelled counter of each status, looked up once per process (and metrics instance).
_by_status: dict[int, dict[int, Counter]] = {}


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
