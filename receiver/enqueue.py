"""Durable enqueue with group commit.

Every request hands its delivery to :meth:`Enqueuer.submit` and waits. One flusher task takes
everything waiting, runs ``enqueue.lua`` once for the whole batch (de-duplication check, store,
Celery message push: atomic, one round trip) and wakes each request with its own outcome. Under
load a batch holds many deliveries, so Redis round trips and Celery messages per event fall; when
idle a batch holds one and adds no delay.

A request is answered 2xx only after the script returned, i.e. after Redis has the delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from importlib.resources import files

import orjson
import redis.asyncio as aioredis

from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks.taskmessage import EMBED_JSON, envelope_parts

log = logging.getLogger("uphooks.receiver")

_LUA = files("receiver").joinpath("enqueue.lua").read_text(encoding="utf-8")


@dataclass(slots=True)
class _Pending:
    key: str
    record: bytes
    future: asyncio.Future[bool]


class Enqueuer:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self._script = client.register_script(_LUA)
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="uphooks-enqueuer")

    async def stop(self) -> None:
        """Flush what is waiting, then stop."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        while self._pending:
            await self._flush_some()

    async def submit(self, key: str, record: bytes) -> bool:
        """Keep one delivery. True if it is new, False if it was already known (duplicate).

        Raises whatever Redis raised; the caller turns that into a status the sender retries.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(key, record, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._flush_some()

    async def _flush_some(self) -> None:
        take = self._settings.enqueue_batch_max
        batch = [p for p in self._pending[:take] if not p.future.done()]
        del self._pending[:take]
        if not batch:
            return
        try:
            flags = await self._call(batch)
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, flag in zip(batch, flags, strict=True):
            if not p.future.done():
                p.future.set_result(bool(flag))

    async def _call(self, batch: list[_Pending]) -> list[int]:
        keys = self._keys
        prefix, suffix = envelope_parts(self._settings.queue)
        redis_keys = [self._settings.queue, keys.events_index]
        args: list[str | bytes | float | int] = [
            self._settings.dedup_ttl_seconds,
            time.time(),
            prefix,
            suffix,
            EMBED_JSON,
        ]
        for p in batch:
            redis_keys.append(keys.delivery(p.key))
            args.extend((p.key, orjson.dumps(p.key), p.record))
        flags: list[int] = await self._script(keys=redis_keys, args=args)
        return flags
