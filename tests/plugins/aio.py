"""``async def`` handlers that count every run, for tests/test_async_handlers.py.

Each run appends its attempt to ``runs:<handler>:<delivery key>``; the bounded ones also record
how many of their calls were in flight in this process when each started.
"""

from __future__ import annotations

import asyncio
import os

from handlers import Context, Options, PermanentError, TransientError, on
from tests.plugins import store
from uphooks.events import BaseEvent


def _ran(ctx: Context) -> None:
    store.client().rpush(store.key(f"runs:{ctx.handler_name}:{ctx.delivery_key}"), ctx.attempt)


@on("upload_completed", name="aio.steady")
async def steady(event: BaseEvent, ctx: Context) -> None:
    _ran(ctx)
    await asyncio.sleep(0.05)


@on("upload_completed", name="aio.flaky", options=Options(max_attempts=5, backoff=(0.2, 0.4)))
async def flaky(event: BaseEvent, ctx: Context) -> None:
    """Fails until its attempt reaches 3."""
    _ran(ctx)
    await asyncio.sleep(0.01)
    if ctx.attempt < 3:
        raise TransientError(f"failing on purpose, attempt {ctx.attempt}")


@on("upload_completed", name="aio.broken")
async def broken(event: BaseEvent, ctx: Context) -> None:
    _ran(ctx)
    raise PermanentError("broken on purpose")


@on(
    "upload_completed",
    name="aio.timed",
    options=Options(time_limit=1, backoff=(0.1, 0.2), max_attempts=3),
)
async def timed(event: BaseEvent, ctx: Context) -> None:
    """The first attempt hangs past its 1 s limit; the second returns."""
    _ran(ctx)
    if ctx.attempt == 1:
        await asyncio.sleep(30)


async def _in_flight(name: str, ctx: Context, seconds: float) -> None:
    r = store.client()
    counter = store.key(f"inflight:{name}:{os.getpid()}")
    now = r.incr(counter)
    r.rpush(store.key(f"inflight:{name}"), now)
    try:
        _ran(ctx)
        await asyncio.sleep(seconds)
    finally:
        r.decr(counter)


@on("social_account_connected", name="aio.bounded", options=Options(concurrency=2))
async def bounded(event: BaseEvent, ctx: Context) -> None:
    await _in_flight("bounded", ctx, 0.3)


@on("social_account_connected", name="aio.wide")
async def wide(event: BaseEvent, ctx: Context) -> None:
    await _in_flight("wide", ctx, 0.3)


@on("social_account_disconnected", name="aio.long")
async def long_running(event: BaseEvent, ctx: Context) -> None:
    """Records its start and its end with the process's pid; takes ``long_seconds``."""
    r = store.client()
    _ran(ctx)
    r.rpush(store.key(f"started:{ctx.delivery_key}"), os.getpid())
    await asyncio.sleep(float(r.get(store.key("ctl:long_seconds")) or 1.5))
    r.rpush(store.key(f"finished:{ctx.delivery_key}"), os.getpid())
