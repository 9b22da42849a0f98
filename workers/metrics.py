"""The workers' metrics: handler call durations and outcomes, what the scheduler published,
and ``/metrics`` served from the worker's main process. The series are defined in
``uphooks/metrics.py``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import start_http_server

from uphooks.collector import queues_of, registry, scrape_client
from uphooks.metrics import metrics, multiprocess_dir, never_raises
from uphooks.redis import sync_client
from uphooks.settings import Settings

log = logging.getLogger("uphooks.metrics")

_serving = False


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


@never_raises
def _observe_call(handler: str, seconds: float) -> None:
    metrics().handler_seconds.labels(handler).observe(seconds)


@never_raises
def handler_outcomes(
    done: Iterable[str] = (), retried: Iterable[str] = (), dead: Iterable[str] = ()
) -> None:
    """Count settled runs by handler name, one name per (delivery, handler) pair."""
    runs = metrics().handler_runs
    for outcome, names in (("done", done), ("retried", retried), ("dead", dead)):
        for name in names:
            runs.labels(name, outcome).inc()


@never_raises
def scheduler_pass(published: int, recovered: int) -> None:
    """Count what one scheduler pass published (workers/schedule.py)."""
    if published:
        metrics().scheduled.labels("published").inc(published)
    if recovered:
        metrics().scheduled.labels("recovered").inc(recovered)


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
