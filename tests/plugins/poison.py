"""A handler whose event kills the process running it, every time."""

from __future__ import annotations

import os
import signal

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on("comment_received", name="test.poison")
def poison(event: BaseEvent, ctx: Context) -> None:
    store.count("poison_runs")
    os.kill(os.getpid(), signal.SIGKILL)


@on("upload_completed", name="test.healthy")
def healthy(event: BaseEvent, ctx: Context) -> None:
    store.record(ctx.handler_name, ctx.pair_key)
