"""The one place Redis clients are made, so timeouts and pooling are the same everywhere.

With Redis Sentinel (uphooks/sentinel.py) a client asks the sentinels where the master is each
time it opens a connection, and drops its connections when the master answers READONLY (it was
demoted), so the ingress, the workers and the CLI follow a failover without a restart.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from uphooks.sentinel import SentinelTarget
from uphooks.settings import Settings


def _master_kwargs(target: SentinelTarget, timeout: float) -> dict[str, Any]:
    return {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }


def _sentinel_kwargs(target: SentinelTarget, timeout: float) -> dict[str, Any]:
    # Asking a sentinel is quick or it is down: a short timeout lets the next one answer.
    short = min(timeout, 1.0)
    return {
        "password": target.sentinel_password,
        "socket_timeout": short,
        "socket_connect_timeout": short,
    }


def sync_client(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    target = settings.sentinel()
    if target is not None:
        manager = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, timeout)
        )
        client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
            target.master_name, health_check_interval=30, **_master_kwargs(target, timeout)
        )
        return client
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


def async_client(settings: Settings) -> aioredis.Redis:
    # Bounded well under the sender's ~10 s so a slow or absent Redis becomes a 503, not a hang.
    timeout = settings.ack_timeout_seconds
    target = settings.sentinel()
    if target is not None:
        manager = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, timeout)
        )
        client: aioredis.Redis = manager.master_for(
            target.master_name, max_connections=64, **_master_kwargs(target, timeout)
        )
        return client
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=64,
    )
