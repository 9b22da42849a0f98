"""A handler on a queue of its own (``<UPHOOKS_QUEUE>.own``), counting its runs."""

from __future__ import annotations

from handlers import Context, Options, on
from tests.plugins import store
from uphooks.events import BaseEvent
from uphooks.settings import get_settings

OWN_QUEUE = f"{get_settings().queue}.own"


@on("upload_completed", name="ledger.elsewhere", options=Options(queue=OWN_QUEUE))
def elsewhere(event: BaseEvent, ctx: Context) -> None:
    store.client().rpush(store.key(f"runs:{ctx.handler_name}:{ctx.delivery_key}"), ctx.attempt)
