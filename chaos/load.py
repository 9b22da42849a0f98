"""A load client that behaves like Upload-Post's sender, on loopback, bounded in count and time.

Like the sender (../shared/delivery-facts.md): it signs each delivery (``X-Upload-Post-Signature``,
HMAC-SHA256 over ``"<timestamp>." + body``; the timestamp is not refreshed on retries), retries
timeouts, connection errors, 5xx, 408 and 429 with backoff, treats any other 4xx as final, waits
at most 10 s for an answer, and reuses the delivery's ``X-Upload-Post-Delivery`` id on every
retry. Unlike the sender it gives up after ``give_up_s`` (not 8.5 h) so a run stays short.

The idempotency key of a delivery is what the ingress answered with it; the harness never
re-derives it.

Every request is recorded (start, end, status) so a scenario can check what the ingress answered
while a fault was on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx
import orjson

from uphooks import signatures

RETRIED = frozenset({408, 429})
_PER_CLIENT = 25
PATH = "/webhooks/upload-post"


@dataclass(slots=True)
class Attempt:
    start: float
    end: float
    status: int | None  # None: timeout or connection error
    error: str | None = None


@dataclass(slots=True)
class Delivery:
    delivery_id: str
    body: bytes
    attempts: list[Attempt] = field(default_factory=list)
    acked_at: float | None = None
    final_status: int | None = None
    #: The idempotency key from the ingress's 2xx answer.
    key: str | None = None
    #: The answer's ``duplicate`` flag (200: already known).
    duplicate: bool | None = None
    #: When the open-loop schedule wanted it sent (the first attempt may start later).
    scheduled_at: float | None = None

    @property
    def acked(self) -> bool:
        return self.acked_at is not None

    @property
    def ack_latency(self) -> float | None:
        for a in self.attempts:
            if a.status is not None and 200 <= a.status < 300:
                return a.end - a.start
        return None


def event_body(ident: str, chaos: dict[str, Any] | None = None) -> bytes:
    """A documented ``upload_completed`` payload; ``ident`` makes its idempotency key unique."""
    body: dict[str, Any] = {
        "event": "upload_completed",
        "job_id": ident,
        "user_email": "[email protected]",
        "profile_username": "chaos",
        "platform": "instagram",
        "media_type": "video",
        "title": f"event {ident}",
        "caption": "fault injection",
        "result": {"success": True, "url": None, "publish_id": ident, "post_id": ident},
        "created_at": "2024-03-15T14:30:00.000000",
    }
    if chaos:
        body["chaos"] = chaos
    return orjson.dumps(body)


def make_delivery(n: int, chaos: dict[str, Any] | None = None, run: str = "") -> Delivery:
    ident = f"chaos-{run or uuid.uuid4().hex[:8]}-{n}"
    return Delivery(ident, event_body(ident, chaos))


def signed_headers(secret: str | None, body: bytes, timestamp: int) -> dict[str, str]:
    if secret is None:
        return {}
    return signatures.upload_post_headers(secret, body, timestamp)


class Sender:
    def __init__(
        self,
        base_url: str,
        *,
        secret: str | None = None,
        timeout_s: float = 10.0,
        give_up_s: float = 90.0,
        max_backoff_s: float = 1.0,
        max_connections: int = 1000,
    ) -> None:
        self.url = base_url.rstrip("/") + PATH
        self.secret = secret
        self.timeout_s = timeout_s
        self.give_up_s = give_up_s
        self.max_backoff_s = max_backoff_s
        self.max_connections = max_connections

    @contextlib.asynccontextmanager
    async def _slots(self) -> AsyncIterator[asyncio.Queue[httpx.AsyncClient]]:
        """``max_connections`` slots over several small clients (httpx's pool gets slow with
        hundreds of connections or waiters in one client). A request takes a free slot first,
        and its time is measured from then: the harness's own queueing is not the ingress's
        latency."""
        shards = max(1, math.ceil(self.max_connections / _PER_CLIENT))
        limits = httpx.Limits(max_connections=_PER_CLIENT, max_keepalive_connections=_PER_CLIENT)
        slots: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(shards):
                client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits)
                await stack.enter_async_context(client)
                for _ in range(_PER_CLIENT):
                    slots.put_nowait(client)
            yield slots

    async def deliver(self, slots: asyncio.Queue[httpx.AsyncClient], d: Delivery) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Upload-Post-Webhooks/1.0",
            "X-Upload-Post-Event": "upload_completed",
            "X-Upload-Post-Delivery": d.delivery_id,
            **signed_headers(self.secret, d.body, int(time.time())),
        }
        first = time.time()
        for n in range(1000):
            client = await slots.get()
            start = time.time()
            try:
                response = await client.post(self.url, content=d.body, headers=headers)
                attempt = Attempt(start, time.time(), response.status_code)
            except httpx.TransportError as exc:
                attempt = Attempt(start, time.time(), None, type(exc).__name__)
            finally:
                slots.put_nowait(client)
            d.attempts.append(attempt)
            status = attempt.status
            if status is not None and 200 <= status < 300:
                answer = response.json()
                d.key, d.duplicate = answer["idempotency_key"], answer["duplicate"]
                d.acked_at = attempt.end
                return
            if status is not None and 400 <= status < 500 and status not in RETRIED:
                d.final_status = status
                return
            if time.time() - first > self.give_up_s:
                return
            backoff = min(self.max_backoff_s, 0.05 * 2**n)
            await asyncio.sleep(random.uniform(backoff / 2, backoff))

    async def _open_loop(self, deliveries: list[Delivery], rate: float) -> None:
        async with self._slots() as slots:
            t0, wall0 = time.monotonic(), time.time()
            tasks = []
            for i, d in enumerate(deliveries):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                d.scheduled_at = wall0 + i / rate
                tasks.append(asyncio.create_task(self.deliver(slots, d)))
            await asyncio.gather(*tasks)

    async def _closed_loop(self, run: str, concurrency: int, duration_s: float) -> list[Delivery]:
        out: list[Delivery] = []
        counter = iter(range(10**9))
        end = 0.0

        async def one_sender(slots: asyncio.Queue[httpx.AsyncClient]) -> None:
            while time.monotonic() < end:
                d = make_delivery(next(counter), None, run)
                out.append(d)
                await self.deliver(slots, d)

        async with self._slots() as slots:
            # From when the clients exist: making 40 of them takes seconds on a busy machine,
            # which used to eat all of a short run (scenario 0 then sent nothing).
            end = time.monotonic() + duration_s
            await asyncio.gather(*[one_sender(slots) for _ in range(concurrency)])
        return out

    async def _all_at_once(self, deliveries: list[Delivery]) -> None:
        async with self._slots() as slots:
            await asyncio.gather(*(self.deliver(slots, d) for d in deliveries))

    # -- blocking entry points; each returns the deliveries with what happened to them --------
    def at_rate(self, deliveries: list[Delivery], rate: float) -> list[Delivery]:
        asyncio.run(self._open_loop(deliveries, rate))
        return deliveries

    def closed_loop(self, run: str, concurrency: int, duration_s: float) -> list[Delivery]:
        """``concurrency`` senders, each sending fresh deliveries back to back."""
        return asyncio.run(self._closed_loop(run, concurrency, duration_s))

    def all_at_once(self, deliveries: list[Delivery]) -> list[Delivery]:
        asyncio.run(self._all_at_once(deliveries))
        return deliveries


def _run_in_child(sender: Sender, method: str, args: tuple[Any, ...], out: Connection) -> None:
    try:
        out.send(getattr(sender, method)(*args))
    except BaseException as exc:
        out.send(exc)
    finally:
        out.close()


class Background:
    """Run one of the sender's entry points in a process of its own while a scenario injects
    faults: its timings are then not skewed by the harness's other threads (GIL)."""

    def __init__(self, sender: Sender, method: str, *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_run_in_child, args=(sender, method, args, send), daemon=True
        )
        self._send = send

    def start(self) -> Background:
        self._proc.start()
        self._send.close()
        return self

    def join(self, timeout: float) -> list[Delivery]:
        try:
            if not self._recv.poll(timeout):
                raise TimeoutError("the load client did not finish in time")
            result = self._recv.recv()
        finally:
            self._recv.close()
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join()
            self._proc.close()
        if isinstance(result, BaseException):
            raise result
        return list(result)


def ack_rate(deliveries: Iterable[Delivery]) -> float:
    """Acknowledged deliveries per second, from the first request to the last acknowledgement."""
    deliveries = list(deliveries)
    starts = [d.attempts[0].start for d in deliveries if d.attempts]
    acks = [d.acked_at for d in deliveries if d.acked_at is not None]
    if not acks:
        return 0.0
    return len(acks) / max(max(acks) - min(starts), 1e-9)


def acked_keys(deliveries: Iterable[Delivery]) -> set[str]:
    return {d.key for d in deliveries if d.key is not None}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))  # nearest rank
    return ordered[min(len(ordered), max(rank, 1)) - 1]
