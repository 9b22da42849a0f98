"""Redis near full: the ingress answers 503 + Retry-After before Redis refuses any write.

Each test has a Redis server of its own (maxmemory is server-wide) and drives it with
``CONFIG SET maxmemory`` relative to what it uses, so the figures hold on any machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis

from receiver.headroom import PER_DELIVERY_OVERHEAD, Headroom
from tests.conftest import Ingress, Stack, fixture_bodies, wait_for
from uphooks.keys import Keys
from uphooks_cli.embedded import RedisServer

BODY = fixture_bodies()["upload_completed.json"]


@pytest.fixture
def own_stack(own_redis: RedisServer) -> Iterator[Stack]:
    stack = Stack(own_redis.url, own_redis.data_dir.parent)
    # 16 MB of filler, so that a few percent of maxmemory dwarf a new connection's buffers.
    filler = redis.Redis.from_url(own_redis.url)
    for i in range(16):
        filler.set(f"filler:{i}", b"f" * 2**20)
    filler.close()  # and with it the megabyte its query buffer held
    try:
        yield stack
    finally:
        stack.stop_all()


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def oom_errors(client: redis.Redis) -> int:
    """Writes Redis refused for lack of memory (INFO errorstats lists OOM once it happened)."""
    stats = client.info("errorstats")
    return int(stats.get("errorstat_OOM", {}).get("count", 0))


def stored(client: redis.Redis, stack: Stack) -> tuple[int, int, int]:
    """(keys in the database, messages queued, members of the events index)."""
    keys = Keys(stack.prefix)
    return int(client.dbsize()), int(client.llen(stack.queue)), int(client.zcard(keys.events_index))


def readyz(ingress: Ingress) -> httpx.Response:
    return httpx.get(ingress.admin_url + "/readyz", timeout=5)


def delivery(i: int) -> bytes:
    payload = orjson.loads(BODY)
    payload["job_id"] = f"job-{i}"
    return orjson.dumps(payload)


def test_a_nearly_full_redis_gets_503_with_retry_after_and_nothing_is_stored_until_it_has_room(
    own_stack: Stack,
) -> None:
    client = own_stack.client()
    ingress = own_stack.ingress(UPHOOKS_REDIS_MEMORY_POLL_SECONDS="0.1")
    assert ingress.post(delivery(0)).status_code == 202
    assert readyz(ingress).json()["memory"]["accepting"] is True

    # 95% in use: above the ingress's 90%, below the point where Redis refuses writes.
    client.config_set("maxmemory", int(used(client) / 0.95))
    wait_for(lambda: readyz(ingress).status_code == 503, timeout=10, what="/readyz says full")
    probe = readyz(ingress).json()
    assert (probe["redis"], probe["memory"]["accepting"]) == ("full", False)
    assert probe["memory"]["used_ratio"] > probe["memory"]["limit_ratio"] == 0.9

    before = stored(client, own_stack)
    refused = [ingress.post(delivery(i)) for i in range(1, 6)]
    assert {r.status_code for r in refused} == {503}
    assert {r.headers["Retry-After"] for r in refused} == {"30"}
    assert refused[0].json()["status"] == "unavailable"
    assert "nearly full" in refused[0].json()["detail"]
    assert stored(client, own_stack) == before
    # A duplicate of a kept delivery is refused too (telling it apart costs a Redis round trip).
    assert ingress.post(delivery(0)).status_code == 503
    # Redis itself would still have taken writes: the ingress stopped first.
    assert client.set(f"{own_stack.prefix}:probe", "x") and client.delete(
        f"{own_stack.prefix}:probe"
    )
    assert oom_errors(client) == 0

    metrics = httpx.get(ingress.admin_url + "/metrics", timeout=5).text
    assert "uphooks_ingress_refused_redis_full_total 6.0" in metrics
    status = own_stack.cli("status")
    assert "the ingress answers 503 above 90%" in status.stdout, status.stdout
    assert "uphooks_redis_maxmemory_bytes" in metrics

    client.config_set("maxmemory", 0)  # room again (a worker drained, memory was added)
    wait_for(lambda: readyz(ingress).status_code == 200, timeout=10, what="/readyz ready again")
    assert ingress.post(delivery(1)).status_code == 202
    assert ingress.post(delivery(0)).status_code == 200
    assert stored(client, own_stack)[2] == before[2] + 1


def test_a_burst_between_two_readings_stops_at_the_limit_before_redis_refuses_a_write(
    own_stack: Stack,
) -> None:
    """One reading every 5 s: the ingress counts what it lets through against the room left."""
    client = own_stack.client()
    big = orjson.dumps(orjson.loads(BODY) | {"caption": "x" * 4000})
    room = 200 * 1024
    ingress = own_stack.ingress(UPHOOKS_REDIS_MEMORY_POLL_SECONDS="5")
    # Once the ingress holds its connections: the limit (90% of maxmemory) sits `room` bytes
    # above what is used now; the burst starts right after a reading saw it.
    client.config_set("maxmemory", int((used(client) + room) / 0.9))
    wait_for(
        lambda: readyz(ingress).json()["memory"]["limit_ratio"] is not None,
        timeout=10,
        what="a reading that saw maxmemory",
    )

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=15, limits=limits) as http:

            async def one(i: int) -> int:
                body = big.replace(b'"job_id":"', f'"job_id":"burst-{i}-'.encode(), 1)
                headers = {"Content-Type": "application/json"}
                response = await http.post(
                    ingress.url + "/webhooks/upload-post", content=body, headers=headers
                )
                return response.status_code

            return await asyncio.gather(*(one(i) for i in range(300)))

    statuses = asyncio.run(burst())
    kept = statuses.count(202)
    # Counted as its record plus PER_DELIVERY_OVERHEAD, a delivery costs Redis more than its body.
    estimated = room // (len(big) + PER_DELIVERY_OVERHEAD)
    assert estimated // 2 <= kept <= room // len(big), (kept, estimated)
    assert statuses.count(503) == 300 - kept
    assert oom_errors(client) == 0
    assert stored(client, own_stack)[2] == kept


def test_a_write_redis_refuses_for_lack_of_memory_is_answered_503_not_500(
    own_stack: Stack,
) -> None:
    """Past maxmemory before a reading showed it (another writer filled Redis)."""
    client = own_stack.client()
    ingress = own_stack.ingress(
        UPHOOKS_REDIS_MEMORY_POLL_SECONDS="10", UPHOOKS_REDIS_MEMORY_LIMIT_RATIO="1"
    )
    client.config_set("maxmemory", used(client) // 2)  # Redis now refuses every write
    refused = ingress.post(delivery(1))
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "30"
    assert oom_errors(client) >= 1
    assert stored(client, own_stack)[2] == 0
    # Until the next reading the ingress refuses without asking Redis.
    assert ingress.post(delivery(2)).status_code == 503
    assert oom_errors(client) == 1
    metrics = httpx.get(ingress.admin_url + "/metrics", timeout=5).text
    assert 'uphooks_ingress_enqueue_failures_total{reason="oom"} 1.0' in metrics


def test_without_maxmemory_the_headroom_never_refuses(own_redis: RedisServer) -> None:
    async def check() -> tuple[bool, dict[str, object]]:
        client = aioredis.Redis.from_url(own_redis.url)
        try:
            headroom = Headroom(client, 0.9, 0.5)
            await headroom.read()
            return headroom.admit(10**9), headroom.state()
        finally:
            await client.aclose()

    admitted, state = asyncio.run(check())
    assert admitted
    assert state["accepting"] is True and state["used_ratio"] is None
