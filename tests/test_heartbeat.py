"""Worker heartbeats on a real Redis: written, read (sync and async), stale, removed; and a
real worker process that beats while it runs and leaves on a warm shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import Stack, wait_for
from uphooks.keys import Keys
from uphooks.liveness import workers_seen, workers_seen_async
from workers.heartbeat import Heartbeat

PLUGIN = "tests.plugins.operated"


def test_beats_are_seen_while_running_and_gone_after_stop(stack: Stack) -> None:
    client, keys = stack.client(), Keys(stack.prefix)
    assert workers_seen(client, keys, 5).alive == 0

    beat = Heartbeat(client, keys, "w1@host", interval=0.1).start()
    try:
        first = client.zscore(keys.worker_heartbeat, "w1@host")
        seen = workers_seen(client, keys, 5)
        assert seen.alive == 1
        assert seen.nodes[0][0] == "w1@host"
        assert seen.last_seen_seconds_ago is not None and seen.last_seen_seconds_ago < 1
        wait_for(
            lambda: (client.zscore(keys.worker_heartbeat, "w1@host") or 0) > (first or 0),
            timeout=5,
            what="a second beat",
        )
    finally:
        beat.stop()
    assert workers_seen(client, keys, 5).alive == 0
    assert client.zscore(keys.worker_heartbeat, "w1@host") is None


def test_a_worker_that_stopped_beating_turns_stale_but_stays_listed(stack: Stack) -> None:
    client, keys = stack.client(), Keys(stack.prefix)
    assert Heartbeat(client, keys, "gone@host", interval=1).beat()
    assert Heartbeat(client, keys, "busy@host", interval=1).beat()
    assert workers_seen(client, keys, 0.5).alive == 2
    time.sleep(0.7)
    seen = workers_seen(client, keys, 0.5)
    assert seen.alive == 0
    assert {n for n, _ in seen.nodes} == {"gone@host", "busy@host"}
    assert seen.last_seen_seconds_ago is not None and seen.last_seen_seconds_ago >= 0.7

    async def read() -> tuple[int, float | None]:
        aclient = aioredis.Redis.from_url(stack.redis_url)
        try:
            fresh = await workers_seen_async(aclient, keys, 30)
            return fresh.alive, fresh.last_seen_seconds_ago
        finally:
            await aclient.aclose()

    alive, ago = asyncio.run(read())
    assert alive == 2 and ago is not None and ago >= 0.7


def test_a_heartbeat_survives_redis_going_away(stack: Stack) -> None:
    keys = Keys(stack.prefix)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    assert Heartbeat(dead, keys, "w@host", interval=1).beat() is False


def status(stack: Stack) -> tuple[int, dict[str, object]]:
    result = stack.cli("status", "--json")
    return result.returncode, json.loads(result.stdout)


def test_a_real_worker_beats_and_leaves_on_warm_shutdown(stack: Stack) -> None:
    client, keys = stack.client(), Keys(stack.prefix)
    code, before = status(stack)
    assert code == 1 and before["workers"] == {
        "alive": 0,
        "last_seen_seconds_ago": None,
        "nodes": [],
    }

    worker = stack.worker(PLUGIN, "-c", "1", UPHOOKS_HEARTBEAT_INTERVAL_SECONDS="0.2")
    wait_for(lambda: workers_seen(client, keys, 2).alive == 1, timeout=15, what="a heartbeat")
    node = workers_seen(client, keys, 2).nodes[0][0]
    assert node.startswith("w") and "@" in node  # the Celery node name (-n w…@%h)
    code, during = status(stack)
    assert code == 0 and during["workers"]["alive"] == 1  # type: ignore[index]

    os.kill(worker.proc.pid, signal.SIGTERM)  # warm shutdown of the main process
    worker.proc.wait(timeout=30)
    assert workers_seen(client, keys, 2).alive == 0
    assert client.zscore(keys.worker_heartbeat, node) is None
