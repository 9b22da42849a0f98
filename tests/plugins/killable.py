"""A handler that can be held mid-run so a test can kill its process."""

from __future__ import annotations

import os
import time

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


def _hold(flag: str, ctx: Context) -> None:
    store.client().set(store.key(f"running:{flag}"), os.getpid())
    deadline = time.monotonic() + 60
    while store.flag(flag) and time.monotonic() < deadline:
        time.sleep(0.02)


@on("upload_completed", name="test.killable")
def killable(event: BaseEvent, ctx: Context) -> None:
    store.count(f"runs:{ctx.pair_key}")
    _hold("hold_before", ctx)
    # The effect is keyed by ctx.pair_key, as the docs tell handler authors to do.
    store.record_once(ctx.handler_name, ctx.pair_key)
    _hold("hold_after", ctx)
