"""A Redis server of our own, on a free port, for a test session, a scenario or a benchmark."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from uphooks_cli.embedded import RedisServer, find_redis_server, free_port

__all__ = ["RedisServer", "compact", "find_redis_server", "free_port", "running"]


@contextlib.contextmanager
def running(data_dir: Path, appendfsync: str = "always") -> Iterator[RedisServer]:
    """A started server (AOF on, ``appendfsync`` as given), stopped on the way out."""
    server = RedisServer(data_dir, appendfsync=appendfsync).start()
    try:
        yield server
    finally:
        server.stop()


def compact(client: redis.Redis, timeout: float = 30) -> None:
    """Rewrite the append-only file and wait for it, so the next run starts with a small one."""
    client.bgrewriteaof()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)
