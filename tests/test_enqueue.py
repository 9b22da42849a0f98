"""Group commit against a real Redis: many deliveries, one round trip, one Celery message."""

from __future__ import annotations

import asyncio
import json
import uuid

import redis
import redis.asyncio as aioredis

from receiver.enqueue import Enqueuer
from uphooks.settings import Settings


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def settings_for(redis_url: str) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return Settings(redis_url=redis_url, key_prefix=prefix, queue=f"{prefix}-q")


def test_concurrent_submits_share_one_message_and_duplicates_are_flagged(redis_url: str) -> None:
    settings = settings_for(redis_url)

    async def scenario() -> list[bool]:
        client = aioredis.Redis.from_url(redis_url)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        try:
            keys = [f"k{i}" for i in range(40)] + ["k0", "k1"]
            return list(await asyncio.gather(*(enqueuer.submit(k, b'{"x":1}') for k in keys)))
        finally:
            await enqueuer.stop()
            await client.aclose()

    flags = run(scenario())
    assert flags == [True] * 40 + [False, False]
    sync = redis.Redis.from_url(redis_url)
    messages = sync.lrange(settings.queue, 0, -1)
    named = [key for m in messages for key in json.loads(json.loads(m)["body"])[0][0]]
    assert sorted(named) == sorted(f"k{i}" for i in range(40))
    assert len(messages) < 40  # batched: fewer Celery messages than deliveries
    assert sync.get(f"{settings.key_prefix}:delivery:k7") == b'{"x":1}'
    assert sync.ttl(f"{settings.key_prefix}:delivery:k7") > settings.dedup_ttl_seconds - 60
    sync.delete(settings.queue, *sync.keys(f"{settings.key_prefix}:*"))


def test_a_redis_error_reaches_every_waiting_request(redis_url: str) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", ack_timeout_seconds=1)

    async def scenario() -> list[object]:
        client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=1)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        try:
            return list(
                await asyncio.gather(
                    *(enqueuer.submit(f"k{i}", b"{}") for i in range(3)), return_exceptions=True
                )
            )
        finally:
            await enqueuer.stop()
            await client.aclose()

    results = run(scenario())
    assert all(isinstance(r, redis.ConnectionError) for r in results), results
