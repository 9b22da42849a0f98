"""Handlers for the pipeline tests; each side effect is one entry in the effects list."""

from __future__ import annotations

from handlers import Context, PermanentError, TransientError, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on("*", name="test.any")
def any_event(event: BaseEvent, ctx: Context) -> None:
    store.record(ctx.handler_name, ctx.pair_key)


@on("upload_completed", name="test.flaky")
def flaky(event: BaseEvent, ctx: Context) -> None:
    """Fails while its attempts are fewer than the ``fail_times`` control value."""
    attempts = store.count(f"attempts:{ctx.pair_key}")
    raw = store.client().get(store.key("ctl:fail_times"))
    if attempts <= int(raw or 0):
        raise TransientError(f"failing on purpose, attempt {ctx.attempt}")
    store.record(ctx.handler_name, f"{ctx.pair_key}#attempt={ctx.attempt}")


@on("upload_completed", name="test.steady")
def steady(event: BaseEvent, ctx: Context) -> None:
    store.record(ctx.handler_name, ctx.pair_key)


@on("social_account_connected", name="test.breakable")
def breakable(event: BaseEvent, ctx: Context) -> None:
    if store.flag("broken"):
        raise PermanentError("broken on purpose; clear the flag and replay")
    store.record(ctx.handler_name, ctx.pair_key)
