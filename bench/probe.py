"""What a benchmark worker tells the driver, through Redis, at almost no cost per event.

- ``mark_ready``: set when the worker is ready (worker_ready signal), since at WARNING level the
  worker logs nothing the driver could wait for.
- ``count_run``: each handler run adds one to a counter in process memory; a thread of each
  process adds it to ``bench:runs`` every 0.1 s. So the driver checks that every event ran
  exactly once without a Redis round trip per event, and without relying on shutdown hooks
  (Celery sends ``worker_process_shutdown`` in the parent, not in the pool child).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import signals

from bench.flushed import URL, Flushed

READY_KEY = "bench:ready"
RUNS_KEY = "bench:runs"


def mark_ready() -> None:
    client = redis.Redis.from_url(URL)
    client.set(READY_KEY, os.getpid())
    client.close()


def _one_more(pending: int) -> int:
    return pending + 1


_runs = Flushed("bench-probe", 0.1, int, lambda client, count: client.incrby(RUNS_KEY, count))


def count_run() -> None:
    _runs.change(_one_more)


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(**_: Any) -> None:
    mark_ready()
