"""A delivery that kills the process routing it, every time (tests/test_poison_routing.py).

The handler is "ordered" only to have a hook that runs while the delivery is routed, before its
pairs are admitted: for a ``comment_received`` event it counts ``routing_deaths`` and kills its
process. ``upload_completed`` events route and run normally and record their effect.
"""

from __future__ import annotations

import os
import signal

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


def _routing(event: BaseEvent) -> None:
    if event.event == "comment_received":
        store.count("routing_deaths")
        os.kill(os.getpid(), signal.SIGKILL)


@on("*", name="test.routed", ordered_by=_routing)
def routed(event: BaseEvent, ctx: Context) -> None:
    store.record(ctx.handler_name, ctx.pair_key)
