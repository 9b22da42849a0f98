"""A handler that counts every run per delivery and notes where the event came from."""

from __future__ import annotations

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on("upload_completed", name="reconciled.count")
def count(event: BaseEvent, ctx: Context) -> None:
    store.client().rpush(store.key(f"runs:{ctx.delivery_key}"), ctx.source)
