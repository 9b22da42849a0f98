"""The ingress's background tasks stop, and a stop never hangs the shutdown (receiver/background).

Real Redis throughout; the one stand-in is a client whose reading swallows its cancellation, the
way a library can when a cancel and a timeout meet (a suspect in a rare hang of a lifespan's
shutdown in this suite).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from receiver.background import stop_task
from receiver.enqueue import Enqueuer
from receiver.headroom import Headroom
from uphooks.keys import Keys
from uphooks.settings import Settings


class LosesItsCancel(aioredis.Redis):
    """Answers ``INFO`` after half a second, and takes a cancellation in that time for an
    answer: the cancelled task goes on as if nothing had happened."""

    async def info(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with contextlib.suppress(asyncio.CancelledError):  # lost: neither raised nor kept
            await asyncio.sleep(0.5)
        return dict(await super().info(*args, **kwargs))


def test_a_headroom_poller_that_loses_its_cancellation_still_stops_at_its_next_turn(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[float, bool]:
        client = LosesItsCancel.from_url(redis_url)
        headroom = Headroom(client, 0.9, 0.01)
        await headroom.start()  # one reading (0.5 s), then the poller
        await asyncio.sleep(0.2)  # the poller is inside its next reading
        assert headroom._task is not None
        task = headroom._task
        began = time.monotonic()
        await headroom.stop()
        took = time.monotonic() - began
        await client.aclose()
        return took, task.done()

    with caplog.at_level(logging.WARNING, logger="uphooks.receiver"):
        took, done = asyncio.run(scenario())
    assert done
    assert took < 2.0, f"stop took {took:.2f} s"  # its flag ended it, not the 5 s bound
    assert "did not stop" not in caplog.text


def test_a_task_that_never_ends_cannot_hold_the_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    holding = True

    async def stubborn() -> None:
        while holding:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    async def scenario() -> float:
        task = asyncio.create_task(stubborn(), name="stubborn")
        await asyncio.sleep(0)
        began = time.monotonic()
        await stop_task(task, seconds=0.3)
        took = time.monotonic() - began
        nonlocal holding
        holding = False  # let it end, so the loop can close
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return took

    with caplog.at_level(logging.WARNING, logger="uphooks.receiver"):
        took = asyncio.run(scenario())
    assert 0.25 < took < 2.0
    assert "background task stubborn did not stop within 0.3 s" in caplog.text


def test_a_stop_answers_every_waiting_request_and_keeps_every_delivery(redis_url: str) -> None:
    """2,000 submits, then a stop while a batch is in flight: each gets its answer, every
    delivery is kept once."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, queue=f"{prefix}-q")
    count = 2000

    async def scenario() -> list[object]:
        client = aioredis.Redis.from_url(redis_url)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        waiting = [
            asyncio.ensure_future(enqueuer.submit(f"k{i}", b'{"x":1}')) for i in range(count)
        ]
        for _ in range(1000):  # until the flusher has a batch in flight
            if enqueuer._inflight:
                break
            await asyncio.sleep(0)
        assert enqueuer._inflight, "the flusher never took a batch"
        await enqueuer.stop()
        answers = await asyncio.wait_for(
            asyncio.gather(*waiting, return_exceptions=True), timeout=10
        )
        await client.aclose()
        return list(answers)

    answers = asyncio.run(scenario())
    assert answers == [True] * count
    sync = redis.Redis.from_url(redis_url)
    try:
        assert sync.zcard(Keys(prefix).events_index) == count
        assert all(sync.exists(f"{prefix}:delivery:k{i}") for i in range(0, count, 97))
    finally:
        sync.delete(settings.queue, *sync.keys(f"{prefix}:*"))
        sync.close()
