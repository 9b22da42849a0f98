"""What a benchmark worker process tells the driver through Redis without a round trip per event:
a value kept in process memory, written to Redis by a thread of that process every ``interval``
seconds (bench/probe.py's run counter, bench/stamps.py's start times)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import redis

T = TypeVar("T")

URL = os.environ.get("BENCH_REDIS_URL") or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class Flushed(Generic[T]):
    """``empty()`` is the value after each write; ``write(client, value)`` sends a non-empty one."""

    def __init__(
        self,
        name: str,
        interval: float,
        empty: Callable[[], T],
        write: Callable[[redis.Redis, T], object],
    ) -> None:
        self.name, self.interval = name, interval
        self._empty, self._write = empty, write
        self._lock = threading.Lock()
        self._pending = empty()
        self._pid = 0

    def change(self, how: Callable[[T], T]) -> None:
        """``how(pending)`` becomes the pending value (under the lock)."""
        if (
            self._pid != os.getpid()
        ):  # first change in this process (a pool child forks after import)
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._pending = self._empty()
            threading.Thread(target=self._flusher, name=self.name, daemon=True).start()
        with self._lock:
            self._pending = how(self._pending)

    def _flusher(self) -> None:
        client = redis.Redis.from_url(URL)
        while True:
            time.sleep(self.interval)
            with self._lock:
                batch, self._pending = self._pending, self._empty()
            if batch:
                self._write(client, batch)
