"""What Redis holds, read at every scrape: the depth of each Celery queue, the messages workers
hold unacknowledged, the dead letters, the ledger's open and overdue items, Redis's memory and
the workers alive. Registered beside the processes' own values by the ingress's ``/metrics``
(receiver/metrics.py) and the worker's (workers/metrics.py).

The unacknowledged count reads kombu's Redis transport's own hash (``unacked``): not a
documented API, hence kombu's upper bound in pyproject.toml.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry

from uphooks.keys import Keys
from uphooks.liveness import workers_seen
from uphooks.metrics import in_process_registry, multiprocess_dir
from uphooks.settings import Settings

log = logging.getLogger("uphooks.metrics")

# kombu's Redis transport keeps reserved (unacknowledged) messages in this hash, per database.
KOMBU_UNACKED = "unacked"


def queues_of(settings: Settings, extra: Iterable[str | None] = ()) -> list[str]:
    """The ingress's queue and any ``extra`` ones (a worker adds its handlers' queues; the
    built-in plugins' own queues are in their own settings, which this shared module does not
    read: ``uphooks status`` adds them)."""
    names = [settings.queue]
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
        reg.register(_Forward(in_process_registry()))
    reg.register(PipelineCollector(client, settings, queues))
    return reg


def scrape_client(client: redis.Redis) -> redis.Redis:
    """``client`` set to fail fast: a scrape must answer within Prometheus's timeout, so with
    Redis down it reports redis_up 0 at once instead of retrying the way the pipeline does."""
    client.set_retry(Retry(NoBackoff(), 1))
    return client
