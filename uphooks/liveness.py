"""Is anybody processing? The workers' heartbeats, read by /readyz, the metrics and the CLI.

Each worker writes its node name into the sorted set ``<prefix>:worker-heartbeat`` every few
seconds (``workers/heartbeat.py``), scored with the *Redis server's* clock; readers compare with
the same clock, so skew between the hosts of the ingress and the workers does not matter.

This module is the read side and lives in ``uphooks`` because the ingress may not import
``workers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from uphooks.keys import Keys


@dataclass(frozen=True)
class WorkersSeen:
    """Workers whose last heartbeat is fresher than the stale window, and the freshest beat."""

    alive: int
    last_seen_seconds_ago: float | None  # None: no worker ever beat (or all were forgotten)
    nodes: tuple[tuple[str, float], ...] = ()  # (node, seconds ago), freshest first

    def as_dict(self, *, with_nodes: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "alive": self.alive,
            "last_seen_seconds_ago": (
                None if self.last_seen_seconds_ago is None else round(self.last_seen_seconds_ago, 1)
            ),
        }
        if with_nodes:
            data["nodes"] = [{"node": n, "seconds_ago": round(age, 1)} for n, age in self.nodes]
        return data


def _server_now(time_reply: Any) -> float:
    seconds, micros = time_reply
    return int(seconds) + int(micros) / 1_000_000


def _report(time_reply: Any, members: list[tuple[bytes | str, float]], stale: float) -> WorkersSeen:
    now = _server_now(time_reply)
    nodes = tuple(
        (m.decode() if isinstance(m, bytes) else m, max(0.0, now - score)) for m, score in members
    )
    alive = sum(1 for _, age in nodes if age <= stale)
    return WorkersSeen(alive, nodes[0][1] if nodes else None, nodes)


def workers_seen(client: redis.Redis, keys: Keys, stale_seconds: float) -> WorkersSeen:
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrevrange(keys.worker_heartbeat, 0, -1, withscores=True)
    time_reply, members = pipe.execute()
    return _report(time_reply, members, stale_seconds)


async def workers_seen_async(
    client: aioredis.Redis, keys: Keys, stale_seconds: float
) -> WorkersSeen:
    """The same for the ingress's event loop (one round trip)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zrevrange(keys.worker_heartbeat, 0, -1, withscores=True)
        time_reply, members = await pipe.execute()
    return _report(time_reply, members, stale_seconds)
