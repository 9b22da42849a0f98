"""Redis Sentinel everywhere, and acknowledged-means-replicated (UPHOOKS_ACK_REPLICAS).

Real parts: a master, a replica and three sentinels on 127.0.0.1 (chaos/sentinels.py), a real
uvicorn ingress and a real Celery worker that only know the sentinels.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from chaos.proxy import Proxy
from chaos.sentinels import MASTER_NAME, ReplicatedRedis
from receiver.replicas import ReplicaWait
from tests.conftest import Stack, fixture_bodies, wait_for
from uphooks.keys import Keys
from uphooks.redis import sync_client
from uphooks.settings import Settings
from uphooks.settings_redis import masked_url

RECORDING = "tests.plugins.recording"


# -- settings ---------------------------------------------------------------------------------
def test_a_sentinel_url_names_every_sentinel_the_master_and_its_password() -> None:
    s = Settings(redis_url="sentinel://:pw@10.0.0.1:26379;sentinel://10.0.0.2/3?master_name=m")
    target = s.sentinel()
    assert target is not None
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert (target.master_name, target.db, target.password) == ("m", 3, "pw")
    assert "pw" not in repr(s) and "pw" not in target.describe()


def test_a_sentinel_list_and_master_name_in_settings_work_without_a_sentinel_url() -> None:
    s = Settings(
        redis_url="redis://:masterpw@ignored:6379/2",
        redis_sentinels="a:1,b:2",
        redis_master_name="mymaster",
        redis_sentinel_password="spw",
    )
    target = s.sentinel()
    assert target is not None
    assert target.sentinels == (("a", 1), ("b", 2))
    assert (target.db, target.password, target.sentinel_password) == (2, "masterpw", "spw")
    assert target.broker_url() == "sentinel://:masterpw@a:1/2;sentinel://:masterpw@b:2/2"


def test_sentinel_without_a_master_name_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValueError, match="UPHOOKS_REDIS_MASTER_NAME"):
        Settings(redis_url="sentinel://10.0.0.1:26379")


def test_every_password_of_a_sentinel_url_is_masked() -> None:
    url = "sentinel://u:p1@h1:1;sentinel://:p2@h2:2/0?master_name=m&sentinel_password=p3"
    masked = masked_url(url)
    assert not {"p1", "p2", "p3"} & set(masked.replace(":", " ").replace("=", " ").split())
    assert masked.count("***") == 3


def test_a_plain_redis_url_uses_no_sentinel() -> None:
    assert Settings(redis_url="redis://127.0.0.1:6379/0").sentinel() is None


# -- a replicated Redis -------------------------------------------------------------------------
@pytest.fixture
def group(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    rr = ReplicatedRedis(tmp_path / "redis").start()
    try:
        yield rr
    finally:
        rr.stop()


def master(rr: ReplicatedRedis) -> redis.Redis:
    return sync_client(Settings(redis_url=rr.sentinel_url), timeout=2.0)


def effects(rr: ReplicatedRedis, prefix: str) -> Counter[str]:
    raw = master(rr).lrange(f"{prefix}:test:effects", 0, -1)
    return Counter(item.decode() for item in raw)


def test_ingress_worker_and_cli_follow_a_failover_without_restarts(
    group: ReplicatedRedis, tmp_path: Path
) -> None:
    stack = Stack(group.sentinel_url, tmp_path)
    try:
        ingress = stack.ingress()
        stack.worker(RECORDING, UPHOOKS_BUILTIN_LOG_HANDLER="false")
        body = fixture_bodies()["social_account_connected.json"]
        first = ingress.post(body)
        assert first.status_code == 202, first.text
        k1 = first.json()["idempotency_key"]
        wait_for(lambda: effects(group, stack.prefix)[f"test.any|{k1}:test.any"] == 1)

        old = group.master.port
        group.master.kill()
        wait_for(lambda: group.master_port() not in (None, old), timeout=30, what="failover")

        second_body = fixture_bodies()["social_account_disconnected.json"]
        deadline = time.monotonic() + 30
        while True:  # the sender's retries: 503 until the ingress reaches the new master
            second = ingress.post(second_body)
            if second.status_code == 202 or time.monotonic() > deadline:
                break
            assert second.status_code == 503, second.text
            time.sleep(0.2)
        assert second.status_code == 202, second.text
        k2 = second.json()["idempotency_key"]
        wait_for(
            lambda: effects(group, stack.prefix)[f"test.any|{k2}:test.any"] == 1,
            timeout=40,
            what="the worker handled an event after the failover",
        )
        assert effects(group, stack.prefix)[f"test.any|{k1}:test.any"] == 1
        status = stack.cli("status", "--json")  # the CLI finds the new master too
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["workers"]["alive"] >= 1
    finally:
        stack.stop_all()


def test_ack_replicas_answers_503_while_no_replica_confirms_and_2xx_once_one_does(
    group: ReplicatedRedis, tmp_path: Path
) -> None:
    stack = Stack(group.sentinel_url, tmp_path)
    try:
        ingress = stack.ingress(UPHOOKS_ACK_REPLICAS="1", UPHOOKS_ACK_TIMEOUT_SECONDS="1")
        bodies = [
            json.dumps({"event": "upload_completed", "job_id": f"j{i}"}).encode() for i in range(3)
        ]
        ok = ingress.post(bodies[0])
        assert ok.status_code == 202, ok.text

        replica = group.replica_servers[0]
        replica.stop()
        started = time.monotonic()
        refused = ingress.post(bodies[1])
        took = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert "not replicated" in refused.json()["detail"]
        assert took < 1.5  # answered within UPHOOKS_ACK_TIMEOUT_SECONDS, not the sender's 10 s
        # The master kept it; the sender's retry is answered once a replica has it.
        replica.start()
        wait_for(lambda: ingress.post(bodies[1]).status_code in (200, 202), timeout=30)
        again = ingress.post(bodies[1])
        assert again.status_code == 200 and again.json()["duplicate"] is True
    finally:
        stack.stop_all()


def test_the_replica_wait_is_detected_per_server_and_falls_back_to_wait_without_waitaof(
    group: ReplicatedRedis,
) -> None:
    async def detect() -> tuple[bool | None, tuple[str | int, ...]]:
        conn = aioredis.Connection(port=group.master.port)
        wait = ReplicaWait(1)
        try:
            await wait.detect(conn)
        finally:
            await conn.disconnect()
        return wait.waitaof, wait.command(0)

    waitaof, command = asyncio.run(detect())
    with redis.Redis(port=group.master.port) as r:
        version = tuple(int(x) for x in str(r.info("server")["redis_version"]).split(".")[:2])
    assert waitaof == (version >= (7, 2))
    # Never a 0 timeout (WAIT 0 blocks for ever); this machine's Redis 7.0 gets WAIT.
    assert command == (("WAITAOF", 0, 1, 1) if waitaof else ("WAIT", 1, 1))


def test_a_master_name_that_the_sentinels_do_not_know_fails_with_its_name(
    group: ReplicatedRedis,
) -> None:
    s = Settings(redis_sentinels=group.sentinel_addresses, redis_master_name="nope")
    with pytest.raises(redis.exceptions.ConnectionError, match="nope"):
        sync_client(s, timeout=1.0).ping()
    assert sync_client(
        Settings(redis_sentinels=group.sentinel_addresses, redis_master_name=MASTER_NAME)
    ).ping()


def test_the_ingress_drops_a_connection_to_a_demoted_master_behind_one_address(
    tmp_path: Path,
) -> None:
    """A managed Redis's failover: the same address now leads to the new primary, while the
    ingress's open connection still reaches the old one, which answers READONLY."""
    pair = ReplicatedRedis(tmp_path / "redis", sentinels=0).start()
    proxy = Proxy(pair.master.port).start()  # the provider's endpoint name
    stack = Stack(proxy.url, tmp_path)
    try:
        ingress = stack.ingress()
        bodies = fixture_bodies()
        assert ingress.post(bodies["upload_completed.json"]).status_code == 202
        new = pair.replica_servers[0]
        with redis.Redis(port=new.port) as r:
            r.execute_command("REPLICAOF", "NO", "ONE")
        with redis.Redis(port=pair.master.port) as r:
            r.execute_command("REPLICAOF", "127.0.0.1", str(new.port))
        proxy.upstream_port = new.port
        answers = [ingress.post(bodies["social_account_connected.json"]).status_code]
        while answers[-1] != 202 and len(answers) < 5:
            answers.append(ingress.post(bodies["social_account_connected.json"]).status_code)
        assert answers[-1] == 202, answers
        assert set(answers[:-1]) <= {503}, answers
        with redis.Redis(port=new.port) as r:
            assert r.zcard(Keys(stack.prefix).events_index) == 2
    finally:
        stack.stop_all()
        proxy.stop()
        pair.stop()
