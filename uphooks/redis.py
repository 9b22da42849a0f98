"""The one place Redis clients are made, so timeouts and pooling are the same everywhere."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from uphooks.settings import Settings


def sync_client(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


def async_client(settings: Settings) -> aioredis.Redis:
    # Bounded well under the sender's ~10 s so a slow or absent Redis becomes a 503, not a hang.
    timeout = settings.ack_timeout_seconds
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=64,
    )
