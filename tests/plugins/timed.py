"""A handler with a per-call time limit whose first attempt hangs past it."""

from __future__ import annotations

import time

from handlers import Context, Options, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on(
    "upload_completed",
    name="test.timed",
    options=Options(time_limit=1, backoff=(0.1, 0.2), max_attempts=3),
)
def timed(event: BaseEvent, ctx: Context) -> None:
    if store.count(f"timed:{ctx.pair_key}") == 1:
        time.sleep(30)  # interrupted by the 1 s limit
    store.record(ctx.handler_name, f"{ctx.pair_key}#attempt={ctx.attempt}")


@on("upload_completed", name="test.untimed")
def untimed(event: BaseEvent, ctx: Context) -> None:
    store.record(ctx.handler_name, ctx.pair_key)
