"""Durable enqueue with group commit.

Every request hands its delivery to :meth:`Enqueuer.submit` and waits. One flusher task takes
everything waiting, runs ``enqueue.lua`` once for the whole batch (de-duplication check, store,
Celery message push: atomic, one round trip) and wakes each request with its own outcome. Under
load a batch holds many deliveries, so Redis round trips and Celery messages per event fall; when
idle a batch holds one and adds no delay.

A request is answered 2xx only after the script returned, i.e. after Redis has the delivery.
Each delivery carries its own deadline (``ack_timeout_seconds``): one timer for the whole
Enqueuer fails the late ones with :class:`TimeoutError`, so a caller needs no timer of its own.

What a request costs here is kept small on purpose (docs/performance.md): the whole batch goes to
Redis as two arguments (records concatenated, and their lengths) besides its keys, the Celery
envelope is rendered once, not per message, and the command is packed by hiredis and sent on a
connection of the Enqueuer's own (one batch is in flight at a time).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from importlib.resources import files

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from receiver.background import stop_task
from receiver.replicas import ReplicaWait
from uphooks.facts import fact_prefix
from uphooks.indexes import lookup_bucket_seconds
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks.taskmessage import EMBED_JSON, Envelope

log = logging.getLogger("uphooks.receiver")

_LUA = files("receiver").joinpath("enqueue.lua").read_text(encoding="utf-8")
_SHA = hashlib.sha1(_LUA.encode(), usedforsecurity=False).hexdigest()  # Redis's script id


@dataclass(slots=True)
class _Pending:
    key: str
    record: bytes
    facts: bytes  # uphooks/facts.py spec(): what the delivery reports, b"" for nothing
    terms: bytes  # uphooks/indexes.py receipt_terms(): what the console indexes it by
    future: asyncio.Future[bool]
    deadline: float


def _pack(command: tuple[str | bytes | int | float, ...]) -> bytes:
    # hiredis's stub types the argument as a 1-tuple; it takes any length.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


class Enqueuer:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._settings = settings
        self._pool = client.connection_pool
        # One batch is in flight at a time, so the Enqueuer keeps one connection of its own and
        # packs the command with hiredis: redis-py's generic command path (packing in Python,
        # pool, retry wrapper) cost more CPU per batch than the whole Lua script.
        self._conn: AbstractConnection | None = None
        self._envelope = Envelope(settings.queue)
        keys = Keys(settings.key_prefix)
        self._fixed_keys = [settings.queue, keys.events_index, keys.due]
        self._record_prefix = keys.delivery("")
        self._fact_prefix = fact_prefix(settings.key_prefix)
        self._index_prefix = keys.index_prefix
        self._lookup_width = lookup_bucket_seconds(settings.dedup_ttl_seconds)
        self._timeout = settings.ack_timeout_seconds
        # UPHOOKS_ACK_REPLICAS: a WAIT after each batch, on the same connection (replicas.py).
        self._replicas = ReplicaWait(settings.ack_replicas) if settings.ack_replicas else None
        self._pending: list[_Pending] = []
        self._inflight: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # set by stop(): the flusher's loop ends at its next turn
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="uphooks-enqueuer")

    async def stop(self) -> None:
        """Flush what is waiting, then stop."""
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()  # the flusher sends what waits, then ends (its calls are bounded)
        await stop_task(self._task, grace=self._timeout + 1)
        self._task = None
        while self._pending:
            await self._flush_some()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._close()

    async def submit(self, key: str, record: bytes, facts: bytes = b"", terms: bytes = b"") -> bool:
        """Keep one delivery. True if it is new, False if it was already known (duplicate).

        ``record`` is the stored delivery (JSON bytes). ``facts`` (uphooks/facts.py ``spec``)
        names the fact it reports: a delivery whose fact was already reconciled (or, for a
        reconciled one, already known) is a duplicate too. ``terms`` (uphooks/indexes.py) are
        the console indexes it goes into. Raises :class:`TimeoutError` when Redis
        did not confirm within ``ack_timeout_seconds``, and whatever Redis raised otherwise; the
        caller turns either into a status the sender retries.
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append(
            _Pending(key, record, facts, terms, future, loop.time() + self._timeout)
        )
        self._wakeup.set()
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._expire)
        return await future

    @property
    def _tick(self) -> float:
        return min(0.1, self._timeout / 10)

    def _expire(self) -> None:
        """Fail the deliveries whose deadline passed; the oldest are first in both lists."""
        loop = self._loop or asyncio.get_event_loop()
        now = loop.time()
        late = 0
        while late < len(self._pending) and self._pending[late].deadline <= now:
            late += 1
        expired = self._pending[:late]
        # Not sent yet: dropped, so Redis never keeps a delivery we answered 503 for.
        del self._pending[:late]
        expired += [p for p in self._inflight if p.deadline <= now]
        for p in expired:
            if not p.future.done():
                p.future.set_exception(
                    TimeoutError(f"redis did not confirm within {self._timeout:.1f}s")
                )
        self._timer = (
            loop.call_later(self._tick, self._expire) if self._pending or self._inflight else None
        )

    async def _run(self) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._flush_some()

    async def _flush_some(self) -> None:
        take = self._settings.enqueue_batch_max
        if len(self._pending) <= take:
            batch, self._pending = self._pending, []
        else:
            batch = self._pending[:take]
            del self._pending[:take]
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        self._inflight = batch
        try:
            flags = await self._call(batch)
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        except asyncio.CancelledError:
            # Stopped with the batch in flight: whether Redis has it is not known, so each
            # request answers as for a timeout (the sender retries; a copy Redis did keep is
            # then a duplicate).
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(TimeoutError("the ingress stopped mid-enqueue"))
            raise
        finally:
            self._inflight = []
        for p, flag in zip(batch, flags, strict=True):
            if not p.future.done():
                p.future.set_result(flag == 1)

    async def _call(self, batch: list[_Pending]) -> list[int]:
        prefix = self._record_prefix
        records = [p.record for p in batch]
        keys = [*self._fixed_keys, *[prefix + p.key for p in batch]]
        args: tuple[str | bytes | int | float, ...] = (
            len(keys),
            *keys,
            self._settings.dedup_ttl_seconds,
            time.time(),
            self._envelope.prefix,
            self._envelope.suffix(),
            EMBED_JSON,
            len(prefix),
            ",".join([str(len(r)) for r in records]),
            b"".join(records),
            self._settings.recover_after_seconds,
            self._fact_prefix,
            ",".join([str(len(p.facts)) for p in batch]),
            b"".join([p.facts for p in batch]),
            self._index_prefix,
            ",".join([str(len(p.terms)) for p in batch]),
            b"".join([p.terms for p in batch]),
            self._lookup_width,
        )
        try:
            flags = await self._execute(_pack(("EVALSHA", _SHA, *args)))
        except NoScriptError:
            # A new or restarted server: EVAL sends the script and caches it for the next time.
            flags = await self._execute(_pack(("EVAL", _LUA, *args)))
        if self._replicas is not None:
            # Ends before the earliest deadline in the batch (and the expiry timer's tick), so
            # a shortfall is answered as one, not as a timeout.
            left = min(p.deadline for p in batch) - asyncio.get_running_loop().time()
            wait_ms = int((left - self._tick) * 1000) - 50
            self._replicas.check(await self._execute(None, wait_ms=wait_ms))
        return flags

    async def _execute(self, packed: bytes | None, wait_ms: int = 0) -> list[int]:
        """Send ``packed`` (or, when None, the replica wait) and read its reply."""
        if self._conn is None:
            self._conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
            if self._replicas is not None:
                self._replicas.forget()
        conn = self._conn
        try:
            if not conn.is_connected:
                # connect() is where a Sentinel-managed connection asks for the master;
                # send_packed_command() alone would connect to its default localhost:6379.
                await conn.connect()
            if packed is None:
                assert self._replicas is not None
                await self._replicas.detect(conn)
                packed = _pack(self._replicas.command(wait_ms))
            await conn.send_packed_command(packed, check_health=False)
            flags: list[int] = await conn.read_response()
        except ReadOnlyError:
            # A demoted master (a failover behind one address, e.g. a managed Redis): the next
            # batch connects again, to whatever the address or the sentinels name now.
            await conn.disconnect(nowait=True)
            raise
        except ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            # Timed out or broken mid-command: whatever arrives later belongs to this command.
            await conn.disconnect(nowait=True)
            if self._replicas is not None:
                self._replicas.forget()  # it may reconnect to another server
            raise
        return flags

    async def _close(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None
