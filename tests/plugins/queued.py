"""A fast handler on the default queue and a slow one on a queue of its own.

The slow queue is named after this test's queue (``<UPHOOKS_QUEUE>.slow``) so tests sharing a
Redis server never see each other's messages. Each effect says which worker ran it
(``TEST_WORKER_ROLE``, set by the test per worker process).
"""

from __future__ import annotations

import os

from handlers import Context, Options, TransientError, on
from tests.plugins import store
from uphooks.events import BaseEvent
from uphooks.settings import get_settings

SLOW_QUEUE = f"{get_settings().queue}.slow"


def _role() -> str:
    return os.environ.get("TEST_WORKER_ROLE", "?")


@on("upload_completed", name="test.fast")
def fast(event: BaseEvent, ctx: Context) -> None:
    store.record(ctx.handler_name, f"{ctx.pair_key}@{_role()}")


@on("upload_completed", name="test.slow", options=Options(queue=SLOW_QUEUE, backoff=(0.1, 0.3)))
def slow(event: BaseEvent, ctx: Context) -> None:
    """Fails while its attempts are fewer than the ``slow_fail_times`` control value."""
    attempts = store.count(f"attempts:{ctx.pair_key}")
    if attempts <= int(store.client().get(store.key("ctl:slow_fail_times")) or 0):
        store.record("test.slow.failed", f"{ctx.pair_key}#attempt={ctx.attempt}@{_role()}")
        raise TransientError("failing on purpose")
    store.record(ctx.handler_name, f"{ctx.pair_key}#attempt={ctx.attempt}@{_role()}")
