"""A counting handler whose worker can be killed mid-batch (tests/test_batching.py).

Each run appends its attempt to ``runs:<handler>:<delivery key>``. The delivery whose job id is
the control value ``die_routing`` kills its process while it is routed (its ordering key is
asked for before the batch is admitted); the one named by ``die_running`` kills it when its
handler starts, before it records anything. Each fires once.
"""

from __future__ import annotations

import os
import signal

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


def _die_once(control: str, event: BaseEvent) -> None:
    name = store.key(f"ctl:{control}")
    job = getattr(event, "job_id", None)
    if job and store.client().get(name) == job.encode() and store.client().delete(name):
        os.kill(os.getpid(), signal.SIGKILL)


def _routing(event: BaseEvent) -> None:
    """Never an ordering key: only a place to die while the batch is routed."""
    _die_once("die_routing", event)


@on("upload_completed", name="batch.counted", ordered_by=_routing)
def counted(event: BaseEvent, ctx: Context) -> None:
    _die_once("die_running", event)
    store.client().rpush(store.key(f"runs:{ctx.handler_name}:{ctx.delivery_key}"), ctx.attempt)
