"""Is anybody processing, and do the workers agree on what to run? The workers' heartbeats, read
by /readyz, the metrics, the CLI and the workers themselves.

Each worker writes its node name into the sorted set ``<prefix>:worker-heartbeat`` every few
seconds (``workers/heartbeat.py``), scored with the *Redis server's* clock; readers compare with
the same clock, so skew between the hosts of the ingress and the workers does not matter. Beside
it, the hash ``<prefix>:worker-heartbeat:info`` holds each node's queues and handler names.

Workers that consume the same queue must load the same handlers: a message goes to whichever
worker takes it first, and a worker that lacks a handler marks the event done without it. Such a
difference is a :class:`HandlerMismatch`.

This module is the read side and lives in ``uphooks`` because the ingress may not import
``workers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from uphooks.keys import Keys


def info_key(keys: Keys) -> str:
    """Hash of node -> ``{"queues": [...], "handlers": [...]}``, written with each beat."""
    return f"{keys.worker_heartbeat}:info"


@dataclass(frozen=True)
class NodeInfo:
    queues: tuple[str, ...]
    handlers: frozenset[str]


@dataclass(frozen=True)
class HandlerMismatch:
    """Live workers on one queue that load different handlers."""

    queue: str
    handlers_of: tuple[tuple[str, tuple[str, ...]], ...]  # (node, its handler names), by node

    def missing(self) -> dict[str, list[str]]:
        """Node -> the handlers other workers on this queue run and it lacks."""
        every = set().union(*(set(h) for _, h in self.handlers_of))
        return {node: sorted(every - set(h)) for node, h in self.handlers_of if every - set(h)}

    def describe(self) -> str:
        lacks = "; ".join(
            f"{node} lacks {', '.join(names)}" for node, names in self.missing().items()
        )
        return (
            f"workers on queue {self.queue!r} load different handlers ({lacks}): an event taken "
            "by a worker that lacks a handler is marked done without it. Start every worker of "
            "a queue with the same UPHOOKS_HANDLER_MODULES and plugins (e.g. "
            "`UPHOOKS_HANDLER_MODULES=myhooks make run`), or give the others their own queue"
        )

    def as_dict(self, *, with_nodes: bool = True) -> dict[str, Any]:
        """Without nodes (a public probe): the queue and how many handler sets, nothing else."""
        data: dict[str, Any] = {
            "queue": self.queue,
            "handler_sets": len({h for _, h in self.handlers_of}),
        }
        if with_nodes:
            data["missing"] = self.missing()
            data["handlers"] = {node: list(h) for node, h in self.handlers_of}
            data["message"] = self.describe()
        return data


@dataclass(frozen=True)
class WorkersSeen:
    """Workers whose last heartbeat is fresher than the stale window, and the freshest beat."""

    alive: int
    last_seen_seconds_ago: float | None  # None: no worker ever beat (or all were forgotten)
    nodes: tuple[tuple[str, float], ...] = ()  # (node, seconds ago), freshest first
    info: tuple[tuple[str, NodeInfo], ...] = ()  # live nodes that reported queues and handlers
    mismatches: tuple[HandlerMismatch, ...] = ()

    def handler_sets(self) -> dict[str, int]:
        """Queue -> how many different handler sets its live workers load (1 is healthy)."""
        sets: dict[str, set[frozenset[str]]] = {}
        for _, node in self.info:
            for queue in node.queues:
                sets.setdefault(queue, set()).add(node.handlers)
        return {queue: len(found) for queue, found in sorted(sets.items())}

    def as_dict(self, *, with_nodes: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "alive": self.alive,
            "last_seen_seconds_ago": (
                None if self.last_seen_seconds_ago is None else round(self.last_seen_seconds_ago, 1)
            ),
        }
        if with_nodes:
            info = dict(self.info)
            data["nodes"] = [
                {"node": n, "seconds_ago": round(age, 1)}
                | (
                    {"queues": list(info[n].queues), "handlers": sorted(info[n].handlers)}
                    if n in info
                    else {}
                )
                for n, age in self.nodes
            ]
        if self.mismatches:
            data["handler_mismatch"] = [m.as_dict(with_nodes=with_nodes) for m in self.mismatches]
        return data


def _server_now(time_reply: Any) -> float:
    seconds, micros = time_reply
    return int(seconds) + int(micros) / 1_000_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _node_info(raw: bytes | str) -> NodeInfo | None:
    try:
        data = orjson.loads(raw)
        return NodeInfo(
            tuple(str(q) for q in data["queues"]), frozenset(str(h) for h in data["handlers"])
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # written by something else: ignored, never fatal to a probe


def find_mismatches(info: dict[str, NodeInfo]) -> tuple[HandlerMismatch, ...]:
    """Every queue whose live workers do not all load the same handlers."""
    by_queue: dict[str, list[tuple[str, NodeInfo]]] = {}
    for node, node_info in sorted(info.items()):
        for queue in node_info.queues:
            by_queue.setdefault(queue, []).append((node, node_info))
    return tuple(
        HandlerMismatch(queue, tuple((node, tuple(sorted(i.handlers))) for node, i in members))
        for queue, members in sorted(by_queue.items())
        if len({i.handlers for _, i in members}) > 1
    )


def _report(
    time_reply: Any,
    members: list[tuple[bytes | str, float]],
    raw_info: dict[Any, Any],
    stale: float,
) -> WorkersSeen:
    now = _server_now(time_reply)
    nodes = tuple((_text(m), max(0.0, now - score)) for m, score in members)
    live = {node for node, age in nodes if age <= stale}
    info: dict[str, NodeInfo] = {}
    for node, raw in (raw_info or {}).items():
        parsed = _node_info(raw)
        if _text(node) in live and parsed is not None:
            info[_text(node)] = parsed
    return WorkersSeen(
        len(live),
        nodes[0][1] if nodes else None,
        nodes,
        tuple(sorted(info.items())),
        find_mismatches(info),
    )


def workers_seen(client: redis.Redis, keys: Keys, stale_seconds: float) -> WorkersSeen:
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrevrange(keys.worker_heartbeat, 0, -1, withscores=True)
    pipe.hgetall(info_key(keys))
    time_reply, members, raw_info = pipe.execute()
    return _report(time_reply, members, raw_info, stale_seconds)


async def workers_seen_async(
    client: aioredis.Redis, keys: Keys, stale_seconds: float
) -> WorkersSeen:
    """The same for the ingress's event loop (one round trip)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zrevrange(keys.worker_heartbeat, 0, -1, withscores=True)
        pipe.hgetall(info_key(keys))
        time_reply, members, raw_info = await pipe.execute()
    return _report(time_reply, members, raw_info, stale_seconds)
