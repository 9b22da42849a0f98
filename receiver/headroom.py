"""Room in Redis for one more delivery: the ingress says 503 before Redis refuses a write.

A Redis with ``maxmemory`` and ``noeviction`` refuses every write once ``used_memory`` passes
``maxmemory``, the workers' writes included (seen: the dispatcher's first write, kombu's
acknowledgement, a MULTI refused whole, which stops the worker), so a Redis filled to the brim
cannot drain the backlog that filled it. The ingress therefore stops taking new deliveries
earlier, at ``UPHOOKS_REDIS_MEMORY_LIMIT_RATIO`` (0.9) of ``maxmemory``, and leaves the rest to
the workers. The sender retries a 503 for ~8.5 h (../shared/delivery-facts.md); nothing is
stored meanwhile.

``INFO memory`` is not asked per request: a task started by :meth:`Headroom.start` reads it every
``UPHOOKS_REDIS_MEMORY_POLL_SECONDS``. Between two readings this process adds what each
delivery it lets through will cost (its record plus :data:`PER_DELIVERY_OVERHEAD`) to the last
reading, so a burst cannot run past the limit unseen; only what *other* ingress processes let
through in one interval can (docs/operations.md, "Redis near full", has the figures).

With ``maxmemory`` 0 (no limit) there is nothing to check and every delivery is let through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from receiver.background import stop_task

log = logging.getLogger("uphooks.receiver")

#: Bytes Redis spends on a queued delivery beyond its record: its key, the main and expires
#: table entries, the events index and ledger schedule members, its fact keys
#: (uphooks/facts.py), its share of a Celery message. `make bench-memory` measured 2,414 bytes
#: per queued event with 806-byte records at 1.4 events per message; at one event per message
#: (~920 bytes) that is ~1,900 beyond the record.
PER_DELIVERY_OVERHEAD = 1900


class Headroom:
    """Whether Redis has room for more deliveries, from a polled ``INFO memory``."""

    def __init__(self, client: aioredis.Redis, ratio: float, interval: float) -> None:
        self._client = client
        self._ratio = ratio
        self._interval = interval
        self._used = 0
        self._maxmemory = 0
        self._admitted = 0  # bytes let through since the last reading
        self._read_at: float | None = None
        self._oom = False  # Redis answered OOM since the last reading
        self._refusing = False  # as of the last reading, for the log
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # set by stop(): the poller's loop ends at its next turn

    @property
    def limit(self) -> int:
        """Bytes of ``used_memory`` above which new deliveries are refused (0: no limit)."""
        return int(self._ratio * self._maxmemory)

    @property
    def accepting(self) -> bool:
        if self._oom:
            return False
        return not self._maxmemory or self._used + self._admitted < self.limit

    def admit(self, record_bytes: int) -> bool:
        """True if a delivery whose record is ``record_bytes`` long may be stored now; its cost
        is then counted against the room left until the next reading."""
        if self._oom:
            return False
        if not self._maxmemory:
            return True
        cost = record_bytes + PER_DELIVERY_OVERHEAD
        if self._used + self._admitted + cost > self.limit:
            return False
        self._admitted += cost
        return True

    def redis_refused(self) -> None:
        """Redis itself answered OOM: refuse until the next reading says otherwise."""
        self._oom = True

    def state(self) -> dict[str, Any]:
        """For /readyz: whether deliveries are taken, and how full Redis was at the last reading."""
        used_ratio = round(self._used / self._maxmemory, 3) if self._maxmemory else None
        return {
            "accepting": self.accepting,
            "used_ratio": used_ratio,
            "limit_ratio": self._ratio if self._maxmemory else None,
            "read_seconds_ago": (
                None if self._read_at is None else round(time.monotonic() - self._read_at, 1)
            ),
        }

    async def read(self) -> None:
        """Take one reading of ``INFO memory``. A failed reading changes nothing: with Redis
        unreachable the enqueue fails on its own (503), and a stale "full" lasts one reading."""
        try:
            info: dict[str, Any] = await self._client.info("memory")
        except Exception as exc:
            log.debug("INFO memory failed: %r", exc)
            return
        self._used = int(info.get("used_memory", 0))
        self._maxmemory = int(info.get("maxmemory", 0))
        self._admitted = 0
        self._oom = False
        self._read_at = time.monotonic()
        self._log_change()

    def _log_change(self) -> None:
        refusing = not self.accepting
        if refusing == self._refusing:
            return
        self._refusing = refusing
        figures = (
            f"used_memory {self._used / 2**20:.1f} MiB of maxmemory "
            f"{self._maxmemory / 2**20:.1f} MiB ({self._used / max(self._maxmemory, 1):.0%})"
        )
        if refusing:
            log.warning(
                "redis is nearly full: %s, above UPHOOKS_REDIS_MEMORY_LIMIT_RATIO=%s. New "
                "deliveries are answered 503 (the sender retries them) until it falls: make sure "
                "workers are draining the queue (uphooks status), then add memory or shorten "
                "UPHOOKS_DEDUP_TTL_SECONDS (docs/operations.md, 'Redis near full')",
                figures,
                self._ratio,
            )
        else:
            log.info("redis has room again (%s): taking deliveries", figures)

    async def start(self) -> None:
        await self.read()
        self._task = asyncio.create_task(self._run(), name="uphooks-headroom")

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._interval)
            await self.read()

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            await stop_task(self._task)
            self._task = None
