"""Prometheus metrics: every series the pipeline records, defined once, and how several
processes share them.

What is measured (``docs/operations.md`` lists the names); each process records its own part:

- the ingress (``receiver/metrics.py``): requests to the webhook path by status code, the time
  to acknowledge (request in to status line out), enqueue failures by reason, duplicates;
- the workers (``workers/metrics.py``): handler outcomes (done, retried, dead), call durations
  per handler, what the scheduler published;
- reconciliation (here, as the workers' job and ``uphooks drift`` both inject);
- read from Redis at scrape time (``uphooks/collector.py``): the depth of each Celery queue,
  the messages workers hold unacknowledged, the dead letters, the workers alive.

Several processes: Celery's prefork pool runs handlers in child processes, and ``uphooks serve
--workers N`` runs N ingress processes, so in-memory counters would each hold a part. Then
prometheus_client's multiprocess mode is used: every process writes its values to files in
one folder, and a scrape merges them. :func:`prepare_multiprocess` makes that folder; it is
called by the process that owns the group, before the others start or fork (the Celery main
process at ``worker_init``, ``uphooks serve`` before uvicorn starts its workers), and the owner
removes the folder when it exits. A single process needs none of it and keeps its values in
memory.

Metrics are made on first use, after the mode is chosen. Recording never raises
(:func:`never_raises`): a metric that cannot be written is logged once and the delivery goes on.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

from prometheus_client import CollectorRegistry, Counter, Histogram, values

from uphooks.settings import Settings

log = logging.getLogger("uphooks.metrics")

# prometheus_client's own variable: it reads it to choose the mode, so it is set, not a setting.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Acknowledging takes a Redis round trip; the sender gives up after ~10 s.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.requests = counter(
            "uphooks_ingress_requests", "Webhook requests answered, by HTTP status code.", "status"
        )
        self.ack_seconds = histogram(
            "uphooks_ingress_ack_seconds",
            "Time from a webhook request's arrival to its status line (the acknowledgement).",
            ACK_BUCKETS,
        )
        self.enqueue_failures = counter(
            "uphooks_ingress_enqueue_failures",
            "Deliveries answered 503 because Redis failed (error), was late (timeout) or "
            "refused the write for lack of memory (oom).",
            "reason",
        )
        self.duplicates = counter(
            "uphooks_ingress_duplicates",
            "Deliveries already known: answered 200 and not queued again.",
        )
        self.redis_full = counter(
            "uphooks_ingress_refused_redis_full",
            "Deliveries answered 503 because Redis's used memory was above "
            "UPHOOKS_REDIS_MEMORY_LIMIT_RATIO of its maxmemory; nothing was kept.",
        )
        self.connections_closed = counter(
            "uphooks_ingress_connections_closed",
            "Connections the ingress closed itself: head_timeout, body_timeout, head_too_large, "
            "idle, or refused at once (total, per_source).",
            "reason",
        )
        self.handler_runs = counter(
            "uphooks_handler_runs",
            "Handler outcomes per (delivery, handler) run: done, retried or dead.",
            "handler",
            "outcome",
        )
        self.scheduled = counter(
            "uphooks_scheduler_published",
            "Items the scheduler published when due: pairs (retries, hand-offs, replays) and "
            "recoveries (a delivery or pair whose message or run was lost, published again).",
            "kind",
        )
        self.reconciled = counter(
            "uphooks_reconciled",
            "Deliveries injected by reconciliation (no webhook told us), by event name.",
            "event",
        )
        self.reconcile_passes = counter(
            "uphooks_reconcile_passes",
            "Reconciliation passes: complete, or cut_short (request budget or API failure).",
            "outcome",
        )
        self.handler_seconds = histogram(
            "uphooks_handler_duration_seconds",
            "Time one handler call took, whatever its outcome.",
            HANDLER_BUCKETS,
            "handler",
        )


_metrics: _Metrics | None = None
_prepared: tuple[int, Path] | None = None  # (owner pid, folder)
# Single-process values live here (not in prometheus_client's global registry).
_registry = CollectorRegistry(auto_describe=True)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _use_multiprocess_values() -> None:
    # The value class is chosen when prometheus_client is imported; choose again now.
    if multiprocess_dir() and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def in_process_registry() -> CollectorRegistry:
    """This process's values when it is not in multiprocess mode."""
    return _registry


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


def never_raises(func: Callable[P, None]) -> Callable[P, None]:
    """``func`` recording a metric: its first failure is logged, none is raised."""
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


@never_raises
def reconciled(event: str, count: int = 1) -> None:
    """Deliveries injected by reconciliation (uphooks/reconcile.py, ``uphooks drift``)."""
    metrics().reconciled.labels(event).inc(count)


@never_raises
def reconcile_pass(outcome: str) -> None:
    metrics().reconcile_passes.labels(outcome).inc()
