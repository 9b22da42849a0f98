"""Prometheus metrics of the ingress and the workers, right with several processes.

What is measured (``docs/operations.md`` lists the names):

- ingress: requests to the webhook path by status code, the time to acknowledge (request in to
  status line out), enqueue failures by reason, duplicates;
- workers: handler outcomes (done, retried, dead) and call durations per handler;
- read from Redis at scrape time (:class:`PipelineCollector`): the depth of each Celery queue,
  the messages workers hold unacknowledged, the dead letters, the workers alive.

Several processes: Celery's prefork pool runs handlers in child processes, and ``uphooks serve
--workers N`` runs N ingress processes, so in-memory counters would each hold a part. Then
prometheus_client's multiprocess mode is used: every process writes its values to files in
one folder, and a scrape merges them. :func:`prepare_multiprocess` makes that folder; it is
called by the process that owns the group, before the others start or fork (the Celery main
process at ``worker_init``, ``uphooks serve`` before uvicorn starts its workers), and the owner
removes the folder when it exits. A single process needs none of it and keeps its values in
memory.

Metrics are made on first use, after the mode is chosen. Recording never raises: a metric that
cannot be written is logged once and the delivery goes on.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import ParamSpec

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uphooks.keys import Keys
from uphooks.liveness import workers_seen
from uphooks.settings import Settings

log = logging.getLogger("uphooks.metrics")

# prometheus_client's own variable: it reads it to choose the mode, so it is set, not a setting.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# kombu's Redis transport keeps reserved (unacknowledged) messages in this hash, per database.
KOMBU_UNACKED = "unacked"

# Acknowledging takes a Redis round trip; the sender gives up after ~10 s.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "uphooks_ingress_requests",
            "Webhook requests answered, by HTTP status code.",
            ["status"],
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "uphooks_ingress_ack_seconds",
            "Time from a webhook request's arrival to its status line (the acknowledgement).",
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.enqueue_failures = Counter(
            "uphooks_ingress_enqueue_failures",
            "Deliveries answered 503 because Redis failed (error), was late (timeout) or "
            "refused the write for lack of memory (oom).",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "uphooks_ingress_duplicates",
            "Deliveries already known: answered 200 and not queued again.",
            registry=registry,
        )
        self.redis_full = Counter(
            "uphooks_ingress_refused_redis_full",
            "Deliveries answered 503 because Redis's used memory was above "
            "UPHOOKS_REDIS_MEMORY_LIMIT_RATIO of its maxmemory; nothing was kept.",
            registry=registry,
        )
        self.connections_closed = Counter(
            "uphooks_ingress_connections_closed",
            "Connections the ingress closed itself: head_timeout, body_timeout, head_too_large, "
            "idle, or refused at once (total, per_source).",
            ["reason"],
            registry=registry,
        )
        self.handler_runs = Counter(
            "uphooks_handler_runs",
            "Handler outcomes per (delivery, handler) run: done, retried or dead.",
            ["handler", "outcome"],
            registry=registry,
        )
        self.scheduled = Counter(
            "uphooks_scheduler_published",
            "Items the scheduler published when due: pairs (retries, hand-offs, replays) and "
            "recoveries (a delivery or pair whose message or run was lost, published again).",
            ["kind"],
            registry=registry,
        )
        self.reconciled = Counter(
            "uphooks_reconciled",
            "Deliveries injected by reconciliation (no webhook told us), by event name.",
            ["event"],
            registry=registry,
        )
        self.reconcile_passes = Counter(
            "uphooks_reconcile_passes",
            "Reconciliation passes: complete, or cut_short (request budget or API failure).",
            ["outcome"],
            registry=registry,
        )
        self.handler_seconds = Histogram(
            "uphooks_handler_duration_seconds",
            "Time one handler call took, whatever its outcome.",
            ["handler"],
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )


_metrics: _Metrics | None = None
_prepared: tuple[int, Path] | None = None  # (owner pid, folder)
_serving = False
# Single-process values live here (not in prometheus_client's global registry).
_registry = CollectorRegistry(auto_describe=True)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _use_multiprocess_values() -> None:
    # The value class is chosen when prometheus_client is imported; choose again now.
    if multiprocess_dir() and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _use_multiprocess_values()
        _metrics = _Metrics(None if multiprocess_dir() else _registry)
    return _metrics


def prepare_multiprocess(role: str, settings: Settings) -> Path:
    """Give this process and every process it starts or forks from now on one metrics folder.

    Call it in the owning process before the others exist and before any metric was recorded
    here. The folder is new (no values of an earlier run) and removed when this process exits.
    """
    global _prepared
    if _prepared is not None and _prepared[0] == os.getpid():
        return _prepared[1]  # once per owner: a second call must not move the folder
    if _metrics is not None:
        raise RuntimeError("metrics were recorded before prepare_multiprocess(); call it first")
    base = Path(settings.metrics_dir) if settings.metrics_dir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"uphooks-{role}-metrics-", dir=base))
    os.environ[MULTIPROC_ENV] = str(path)
    _use_multiprocess_values()
    atexit.register(_remove_folder, path, os.getpid())
    _prepared = (os.getpid(), path)
    return path


def _remove_folder(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # forked children inherit atexit handlers
        shutil.rmtree(path, ignore_errors=True)


P = ParamSpec("P")


def _never_raises(func: Callable[P, None]) -> Callable[P, None]:
    warned = False

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        nonlocal warned
        try:
            func(*args, **kwargs)
        except Exception as exc:
            if not warned:
                log.warning("metrics not recorded (reported once): %r", exc)
                warned = True

    return wrapper


# -- ingress --------------------------------------------------------------------------------


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
                record_request(status, time.perf_counter() - start)
                start_seen.append(True)
            await send(message)

        start_seen: list[bool] = []
        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not start_seen:  # the app raised before answering: the server answers 500
                record_request(status, time.perf_counter() - start)


@_never_raises
def record_request(status: int, seconds: float) -> None:
    """One webhook request answered with ``status``, ``seconds`` after it arrived."""
    m = metrics()
    m.requests.labels(str(status)).inc()
    m.ack_seconds.observe(seconds)


@_never_raises
def duplicate() -> None:
    """A delivery that was already known (answered 200)."""
    metrics().duplicates.inc()


@_never_raises
def refused_redis_full() -> None:
    """A delivery answered 503 because Redis was nearly full (receiver/headroom.py)."""
    metrics().redis_full.inc()


@_never_raises
def enqueue_failed(reason: str) -> None:
    """Redis did not keep a delivery: ``timeout``, ``error`` or ``oom``."""
    metrics().enqueue_failures.labels(reason).inc()


@_never_raises
def connection_closed(reason: str) -> None:
    """The ingress ended a connection itself (receiver/connections.py says why)."""
    metrics().connections_closed.labels(reason).inc()


@_never_raises
def reconciled(event: str, count: int = 1) -> None:
    """Deliveries injected by reconciliation (uphooks/reconcile.py)."""
    metrics().reconciled.labels(event).inc(count)


@_never_raises
def reconcile_pass(outcome: str) -> None:
    metrics().reconcile_passes.labels(outcome).inc()


# -- workers --------------------------------------------------------------------------------


class Timer:
    """How long the ``with`` block took; ``seconds`` is set when it ends."""

    seconds: float = 0.0


@contextlib.contextmanager
def handler_call(handler: str) -> Iterator[Timer]:
    """Time one handler call, whatever it raises."""
    timer = Timer()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - start
        _observe_call(handler, timer.seconds)


@_never_raises
def _observe_call(handler: str, seconds: float) -> None:
    metrics().handler_seconds.labels(handler).observe(seconds)


@_never_raises
def handler_outcomes(
    done: Iterable[str] = (), retried: Iterable[str] = (), dead: Iterable[str] = ()
) -> None:
    """Count settled runs by handler name, one name per (delivery, handler) pair."""
    runs = metrics().handler_runs
    for outcome, names in (("done", done), ("retried", retried), ("dead", dead)):
        for name in names:
            runs.labels(name, outcome).inc()


@_never_raises
def scheduler_pass(published: int, recovered: int) -> None:
    """Count what one scheduler pass published (workers/schedule.py)."""
    if published:
        metrics().scheduled.labels("published").inc(published)
    if recovered:
        metrics().scheduled.labels("recovered").inc(recovered)


# -- what Redis holds, read at scrape time ---------------------------------------------------


def queues_of(settings: Settings, extra: Iterable[str | None] = ()) -> list[str]:
    """The ingress's queue, the built-in handlers' own queues, and any ``extra`` ones."""
    names = [settings.queue, settings.telegram_queue, settings.forward_queue, settings.sql_queue]
    return list(dict.fromkeys(q for q in (*names, *extra) if q))


class PipelineCollector(Collector):
    """Queue depths (LLEN), unacknowledged messages, dead letters and live workers, read from
    Redis in one round trip on every scrape."""

    def __init__(self, client: redis.Redis, settings: Settings, queues: list[str]) -> None:
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._queues = queues
        self._stale = settings.heartbeat_stale_seconds

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("uphooks_redis_up", "1 when Redis answered this scrape's reads.")
        try:
            pipe = self._client.pipeline(transaction=False)
            for queue in self._queues:
                pipe.llen(queue)
            pipe.hlen(KOMBU_UNACKED)
            pipe.zcard(self._keys.dlq_index)
            pipe.zcard(self._keys.due)
            pipe.zrange(self._keys.due, 0, 0, withscores=True)
            pipe.info("memory")
            *depths, unacked, dead, open_items, oldest, memory = pipe.execute()
            seen = workers_seen(self._client, self._keys, self._stale)
        except redis.RedisError as exc:
            log.warning("metrics scrape: redis unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "uphooks_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, n in zip(self._queues, depths, strict=True):
            depth.add_metric([queue], n)
        yield depth
        yield GaugeMetricFamily(
            "uphooks_unacked_messages",
            "Messages reserved by workers (running, or waiting for a retry's countdown); "
            "kombu keeps one count per Redis database.",
            value=unacked,
        )
        yield GaugeMetricFamily(
            "uphooks_dead_letters", "Dead letters kept (uphooks dlq ls).", value=dead
        )
        yield GaugeMetricFamily(
            "uphooks_redis_used_memory_bytes",
            "Redis's used_memory (INFO memory): what maxmemory is compared with.",
            value=int(memory.get("used_memory", 0)),
        )
        yield GaugeMetricFamily(
            "uphooks_redis_maxmemory_bytes",
            "Redis's maxmemory (0: no limit); the ingress refuses new deliveries above "
            "UPHOOKS_REDIS_MEMORY_LIMIT_RATIO of it.",
            value=int(memory.get("maxmemory", 0)),
        )
        yield GaugeMetricFamily(
            "uphooks_ledger_open_items",
            "Pairs not yet settled and deliveries not yet routed, in the ledger's schedule.",
            value=open_items,
        )
        yield GaugeMetricFamily(
            "uphooks_ledger_oldest_overdue_seconds",
            "How long the oldest overdue item in the ledger's schedule has waited (0: none); "
            "it grows when no worker moves due work or recovery cannot keep up.",
            value=max(0.0, time.time() - oldest[0][1]) if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "uphooks_workers_alive",
            "Workers whose heartbeat is fresher than UPHOOKS_HEARTBEAT_STALE_SECONDS.",
            value=seen.alive,
        )
        if seen.last_seen_seconds_ago is not None:
            yield GaugeMetricFamily(
                "uphooks_worker_heartbeat_age_seconds",
                "Seconds since the freshest worker heartbeat.",
                value=seen.last_seen_seconds_ago,
            )
        handler_sets = GaugeMetricFamily(
            "uphooks_worker_handler_sets",
            "Different handler sets loaded by the live workers of each queue; above 1, events "
            "taken by a worker that lacks a handler are done without it (uphooks status).",
            labels=["queue"],
        )
        for queue, n in seen.handler_sets().items():
            handler_sets.add_metric([queue], n)
        yield handler_sets


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


def registry(settings: Settings, client: redis.Redis, queues: list[str]) -> CollectorRegistry:
    """A registry that reads every process's values (or this one's) and Redis on each collect."""
    reg = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
    else:
        reg.register(_Forward(_registry))
    reg.register(PipelineCollector(client, settings, queues))
    return reg


_scrape_registry: CollectorRegistry | None = None


def scrape_client(client: redis.Redis) -> redis.Redis:
    # A scrape must answer within Prometheus's timeout: with Redis down, report redis_up 0
    # quickly instead of retrying the way the pipeline does.
    client.set_retry(Retry(NoBackoff(), 1))
    return client


def _ingress_registry(settings: Settings) -> CollectorRegistry:
    global _scrape_registry
    if _scrape_registry is None:
        from uphooks.redis import sync_client

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


def serve_worker_metrics(settings: Settings, extra_queues: Iterable[str | None] = ()) -> bool:
    """Serve ``/metrics`` from the worker's main process on UPHOOKS_WORKER_METRICS_PORT.

    Returns False when no port is set, or when it is taken (logged; the worker runs on).
    A second call in the same process changes nothing.
    """
    global _serving
    port = settings.worker_metrics_port
    if not port:
        return False
    if _serving:
        return True
    from prometheus_client import start_http_server

    from uphooks.redis import sync_client

    client = scrape_client(sync_client(settings, timeout=2.0))
    reg = registry(settings, client, queues_of(settings, extra_queues))
    try:
        start_http_server(port, addr=settings.worker_metrics_address, registry=reg)
    except OSError as exc:
        log.warning(
            "worker metrics not served on %s:%d (%s); is another worker on this host using "
            "UPHOOKS_WORKER_METRICS_PORT?",
            settings.worker_metrics_address,
            port,
            exc,
        )
        return False
    _serving = True
    log.info(
        "metrics on http://%s:%d/metrics (%s)",
        settings.worker_metrics_address,
        port,
        "multiprocess" if multiprocess_dir() else "single process",
    )
    return True


def sample(reg: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample's value from a registry (for the CLI and the tests)."""
    value = reg.get_sample_value(name, labels or {})
    return None if value is None else float(value)


__all__ = [
    "CONTENT_TYPE_LATEST",
    "IngressMetrics",
    "PipelineCollector",
    "connection_closed",
    "duplicate",
    "endpoint",
    "enqueue_failed",
    "handler_call",
    "handler_outcomes",
    "metrics",
    "prepare_multiprocess",
    "queues_of",
    "refused_redis_full",
    "registry",
    "serve_worker_metrics",
]
