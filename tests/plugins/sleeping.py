"""A handler that counts its run, then sleeps without touching Redis, so Redis can go away
under it without failing it."""

from __future__ import annotations

import time

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent

SLEEP = 3.0


@on("upload_completed", name="test.sleeping")
def sleeping(event: BaseEvent, ctx: Context) -> None:
    store.count(f"runs:{ctx.pair_key}")
    store.client().set(store.key("running"), ctx.pair_key)
    time.sleep(SLEEP)
