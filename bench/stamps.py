"""When each handler run or task started, told to the driver through Redis at little cost.

``stamp(name)`` keeps (name, time.time()) in process memory; a thread of each process writes
them to the hash ``bench:started`` every 50 ms. bench/worker_patterns.py compares them with the
time each sender was answered (the 202, or ``delay()`` returning) for the latency rows.
"""

from __future__ import annotations

import os
import threading
import time

import redis

STARTED_KEY = "bench:started"

_url = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_lock = threading.Lock()
_pending: dict[str, float] = {}
_pid = 0


def _flusher() -> None:
    global _pending
    client = redis.Redis.from_url(_url)
    while True:
        time.sleep(0.05)
        with _lock:
            batch, _pending = _pending, {}
        if batch:
            client.hset(STARTED_KEY, mapping=batch)  # type: ignore[arg-type]


def stamp(name: str) -> None:
    global _pid, _pending
    at = time.time()
    if _pid != os.getpid():  # first stamp in this process (a pool child forks after import)
        _pid = os.getpid()
        _pending = {}
        threading.Thread(target=_flusher, name="bench-stamps", daemon=True).start()
    with _lock:
        _pending[name] = at
