"""A handler whose first attempt fails with a fixed retry delay, so the retry waits in a worker."""

from __future__ import annotations

from handlers import Context, TransientError, on
from tests.plugins import store
from uphooks.events import BaseEvent

#: Seconds the retry waits (a floor on the backoff): long enough for a test to stop the worker.
RETRY_AFTER = 10.0


@on("upload_completed", name="test.retry_later")
def retry_later(event: BaseEvent, ctx: Context) -> None:
    attempts = store.count(f"attempts:{ctx.pair_key}")
    if attempts == 1:
        raise TransientError("first attempt fails on purpose", retry_after=RETRY_AFTER)
    store.record_once(ctx.handler_name, ctx.pair_key)
