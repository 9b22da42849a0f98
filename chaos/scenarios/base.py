"""What every scenario shares: the run's options, a fresh cluster, and a few helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.load import Delivery, Sender, acked_keys, make_delivery
from chaos.report import Row, check_runs, count, drain, quiesce
from chaos.stack import SECRET, Cluster, Proc, wait_ready


@dataclass
class Ctx:
    out: Path
    quick: bool
    #: End-to-end events/s the pipeline sustained in scenario 0 (or the fallback).
    max_rate: float = 0.0

    def pick(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    @property
    def fault_rate(self) -> float:
        """Load during fault scenarios: well under the maximum, so faults, not load, show."""
        return max(10.0, min(0.4 * self.max_rate, 100.0))

    @contextlib.contextmanager
    def cluster(self, name: str, **kwargs: Any) -> Iterator[Cluster]:
        cluster = Cluster(self.out / name, **kwargs)
        try:
            cluster.start_redis()
            yield cluster
        finally:
            cluster.stop()


def start_stack(
    cluster: Cluster,
    workers: int = 2,
    worker_redis_url: str | None = None,
    ingress_redis_url: str | None = None,
) -> tuple[str, list[Proc]]:
    """The ingress and ``workers`` supervised workers, started in parallel."""
    procs = [cluster.worker(f"w{i}", worker_redis_url, wait=False) for i in range(workers)]
    url, _ = cluster.ingress(ingress_redis_url)
    for proc in procs:
        wait_ready(proc)
    cluster.supervise()
    return url, procs


def deliveries(
    n: int, run: str, chaos_for: Callable[[int], dict[str, Any] | None] = lambda i: None
) -> list[Delivery]:
    return [make_delivery(i, chaos_for(i), run) for i in range(n)]


def sender(url: str, **kwargs: Any) -> Sender:
    return Sender(url, secret=SECRET, **kwargs)


def settle_queue(cluster: Cluster) -> Callable[[], bool]:
    """True once nothing waits in the queue or in kombu's unacknowledged set."""

    def settled() -> bool:
        with cluster.client() as r:
            return int(r.llen(cluster.settings.queue)) == 0 and int(r.hlen("unacked")) == 0

    return settled


def account(
    row: Row,
    cluster: Cluster,
    sent: Iterable[Delivery],
    *,
    drain_s: float | None = None,
    expected: Callable[[str], int] = lambda key: 1,
    killed: Mapping[int, float] | Callable[[], Mapping[int, float]] | None = None,
    keys: Collection[str] | None = None,
) -> float | None:
    """The end of every scenario: optionally wait ``drain_s`` for the acknowledged deliveries'
    effects and an empty queue, wait until no copy of a message can come any more, then fill
    the counting columns and check the handler runs per pair (``keys``: the acknowledged ones
    unless given). Returns the drain's seconds when it drained."""
    sent = list(sent)
    waited = None
    if drain_s is not None:
        waited = drain(cluster, acked_keys(sent), drain_s, settle=settle_queue(cluster))
    quiesce(row, cluster)
    count(row, cluster, sent)
    if callable(killed):  # known only once everything ran (a poison event's own deaths)
        killed = killed()
    check_runs(row, cluster, acked_keys(sent) if keys is None else keys, expected, killed)
    return waited
