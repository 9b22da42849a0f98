"""The one place Redis clients are made, so timeouts and pooling are the same everywhere.

With Redis Sentinel (uphooks/sentinel.py) a client asks the sentinels where the master is each
time it opens a connection, and drops its connections when the master answers READONLY (it was
demoted), so the ingress, the workers and the CLI follow a failover without a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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
    return _client(
        settings, timeout, redis.Redis, redis.sentinel.Sentinel, health_check_interval=30
    )


def async_client(settings: Settings) -> aioredis.Redis:
    # Bounded well under the sender's ~10 s so a slow or absent Redis becomes a 503, not a hang.
    return _client(
        settings,
        settings.ack_timeout_seconds,
        aioredis.Redis,
        aiosentinel.Sentinel,
        max_connections=64,
    )


_R = TypeVar("_R", redis.Redis, aioredis.Redis)


def _client(
    settings: Settings,
    timeout: float,
    kind: type[_R],
    sentinel: Callable[..., Any],
    **pool: Any,
) -> _R:
    """A ``kind`` client of the master the sentinels name (with Sentinel), else of
    UPHOOKS_REDIS_URL; ``pool``: what the sync and the async client add of their own."""
    target = settings.sentinel()
    if target is None:
        return kind.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, **pool
        )
    manager = sentinel(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, timeout))
    client: _R = manager.master_for(
        target.master_name, redis_class=kind, **pool, **_master_kwargs(target, timeout)
    )
    return client
