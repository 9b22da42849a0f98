"""Redis between and after runs: every contender starts from an empty Redis, and every delivery
our ingress acknowledged must be found there (record, events index, one queued message)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import redis

from bench.common import PREFIX
from harness.redis import compact


def reset(client: redis.Redis) -> None:
    """Empty Redis and shrink its append-only file, so every contender starts alike."""
    client.flushall()
    compact(client)


def queued_batches(client: redis.Redis, queue: str) -> list[list[str]]:
    """The delivery keys each of our Celery messages on ``queue`` names."""
    batches = []
    for raw in client.lrange(queue, 0, -1):
        message = orjson.loads(raw)
        args = orjson.loads(message["body"])[0]
        batches.append(list(args[0]))
    return batches


def check_acked(client: redis.Redis, acked: list[str], queue: str) -> dict[str, Any]:
    """Every acknowledged key must have its record, its index entry and one queued message."""
    queued = Counter(k for batch in queued_batches(client, queue) for k in batch)
    found = 0
    for start in range(0, len(acked), 5000):
        chunk = acked[start : start + 5000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.exists(f"{PREFIX}:delivery:{key}")
            pipe.zscore(f"{PREFIX}:events", key)
        answers = pipe.execute()
        for i, key in enumerate(chunk):
            if answers[2 * i] and answers[2 * i + 1] is not None and queued[key] == 1:
                found += 1
    return {
        "acknowledged": len(acked),
        "acknowledged_found_in_redis": found,
        "enqueued_over_acknowledged": round(found / len(acked), 6) if acked else None,
        "events_index": int(client.zcard(f"{PREFIX}:events")),
        "keys_queued_more_than_once": sum(1 for n in queued.values() if n > 1),
    }


def batch_sizes(batches: list[list[str]]) -> dict[str, Any]:
    sizes = sorted(len(b) for b in batches)
    if not sizes:
        return {}
    return {
        "messages": len(sizes),
        "events": sum(sizes),
        "mean": round(sum(sizes) / len(sizes), 1),
        "p50": sizes[len(sizes) // 2],
        "p90": sizes[int(len(sizes) * 0.9)],
        "max": sizes[-1],
    }


def count_done(client: redis.Redis) -> int:
    """Events whose no-op handler left its done marker."""
    done = 0
    keys = list(client.scan_iter(f"{PREFIX}:handled:*", count=5000))
    for start in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 5000]:
            pipe.hget(key, "bench.noop")
        done += sum(1 for v in pipe.execute() if v == b"done")
    return done
