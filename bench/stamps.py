"""When each handler run or task started, told to the driver through Redis at little cost.

``stamp(name)`` keeps (name, time.time()) in process memory; a thread of each process writes
them to the hash ``bench:started`` every 50 ms. bench/worker_patterns.py compares them with the
time each sender was answered (the 202, or ``delay()`` returning) for the latency rows.
"""

from __future__ import annotations

import time

import redis

from bench.flushed import Flushed

STARTED_KEY = "bench:started"


def _keep(client: redis.Redis, batch: dict[str, float]) -> None:
    client.hset(STARTED_KEY, mapping=batch)  # type: ignore[arg-type]


_started: Flushed[dict[str, float]] = Flushed("bench-stamps", 0.05, dict, _keep)


def stamp(name: str) -> None:
    at = time.time()

    def add(pending: dict[str, float]) -> dict[str, float]:
        pending[name] = at
        return pending

    _started.change(add)
