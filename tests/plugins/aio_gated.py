"""An ``async def`` handler that waits for a gate, for tests/test_async_handlers.py: it records
its start, then waits until the test sets ``ctl:gate_open``, then records its run."""

from __future__ import annotations

import asyncio

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on("upload_completed", name="aio.gated")
async def gated(event: BaseEvent, ctx: Context) -> None:
    r = store.client()
    r.rpush(store.key(f"started:{ctx.delivery_key}"), ctx.attempt)
    while True:  # the gate is set from the test's process: polled, not an asyncio.Event
        if r.exists(store.key("ctl:gate_open")):
            break
        await asyncio.sleep(0.05)
    r.rpush(store.key(f"runs:{ctx.handler_name}:{ctx.delivery_key}"), ctx.attempt)
