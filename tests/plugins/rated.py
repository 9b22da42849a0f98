"""A handler limited to 5 runs per second across all workers (tests/test_rate_limits.py)."""

from __future__ import annotations

import time

from handlers import Context, Options, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on("upload_completed", name="rated.five", options=Options(rate="5/s"))
def five(event: BaseEvent, ctx: Context) -> None:
    r = store.client()
    r.rpush(store.key(f"runs:{ctx.handler_name}:{ctx.delivery_key}"), ctx.attempt)
    r.rpush(store.key("rated:at"), repr(time.time()))
