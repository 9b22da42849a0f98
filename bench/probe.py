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
import threading
import time
from typing import Any

import redis
from celery import signals

READY_KEY = "bench:ready"
RUNS_KEY = "bench:runs"

_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_lock = threading.Lock()
_pending = 0
_pid = 0


def mark_ready() -> None:
    client = redis.Redis.from_url(_url)
    client.set(READY_KEY, os.getpid())
    client.close()


def _flusher() -> None:
    global _pending
    client = redis.Redis.from_url(_url)
    while True:
        time.sleep(0.1)
        with _lock:
            count, _pending = _pending, 0
        if count:
            client.incrby(RUNS_KEY, count)


def count_run() -> None:
    global _pending, _pid
    if _pid != os.getpid():  # first run in this process (a pool child forks after import)
        _pid = os.getpid()
        _pending = 0
        threading.Thread(target=_flusher, name="bench-probe", daemon=True).start()
    with _lock:
        _pending += 1


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(**_: Any) -> None:
    mark_ready()
