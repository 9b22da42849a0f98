"""The reaper publishes again what a lost message left behind (docs/reliability.md, 8c/8d)."""

from __future__ import annotations

import time

from tests.conftest import Stack
from uphooks.settings import Settings
from workers.reaper import Reaper

Published = list[tuple[list[str], list[str] | None, int]]


def reaper_for(stack: Stack) -> tuple[Reaper, Published, Settings]:
    settings = Settings(
        redis_url=stack.redis_url,
        key_prefix=stack.prefix,
        queue=stack.queue,
        visibility_timeout_seconds=10,
        task_time_limit_seconds=4,
        task_soft_time_limit_seconds=3,
        retry_hop_seconds=2,
        restore_sweep_seconds=1,
        reconcile_after_seconds=20,
        reconcile_interval_seconds=2,
    )
    published: Published = []

    def publish(
        keys: list[str],
        only: list[str] | None,
        attempt: int,
        nb: float | None,
        cd: float,
        queue: str | None,
    ) -> None:
        published.append((keys, only, attempt))

    return Reaper(stack.client(), settings, publish), published, settings


def test_an_acknowledged_delivery_never_claimed_is_published_again_once(stack: Stack) -> None:
    reaper, published, _ = reaper_for(stack)
    r = stack.client()
    now = time.time()
    for key, age in (("lost", 60), ("handled", 60), ("recent", 5)):
        r.set(f"{stack.prefix}:delivery:{key}", b"{}")
        r.zadd(f"{stack.prefix}:events", {key: now - age})
    r.hset(f"{stack.prefix}:handled:handled", "h", "done")

    assert reaper.run_once("node-a", now=now) == (1, 0)
    assert published == [(["lost"], None, 1)]
    r.delete(f"{stack.prefix}:reaper:lock")
    assert reaper.run_once("node-a", now=now + 1) == (0, 0)  # the watermark moved past it


def test_an_overdue_retry_is_published_again_and_a_settled_one_is_dropped(stack: Stack) -> None:
    reaper, published, _ = reaper_for(stack)
    r = stack.client()
    now = time.time()
    for key in ("k1", "k2"):
        r.set(f"{stack.prefix}:delivery:{key}", b"{}")
    r.hset(f"{stack.prefix}:handled:k1", mapping={"h": "retrying", "h@": '{"attempt": 2}'})
    r.hset(f"{stack.prefix}:handled:k2", "h", "done")
    r.zadd(f"{stack.prefix}:open", {"k1|h": now - 60, "k2|h": now - 60})

    assert reaper.run_once("node-a", now=now) == (0, 1)
    assert published == [(["k1"], ["h"], 3)]
    assert r.zrange(f"{stack.prefix}:open", 0, -1) == [b"k1|h"]


def test_only_one_worker_reaps_at_a_time(stack: Stack) -> None:
    reaper, _, _ = reaper_for(stack)
    assert stack.client().set(f"{stack.prefix}:reaper:lock", "node-b", nx=True, ex=5)
    assert reaper.run_once("node-a") == (0, 0)
