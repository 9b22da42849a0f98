"""Plain ``def`` handlers for UPHOOKS_SYNC_THREADS (workers/aio.py ``SyncPool``), for
tests/test_sync_threads.py.

Each run appends its attempt to ``runs:<handler>:<delivery key>``; the wide ones also record
how many calls were in flight in this process when each started, and on which thread; the long
one records its start and its end with the process's pid.
"""

from __future__ import annotations

import os
import threading
import time

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


def _ran(ctx: Context) -> None:
    store.client().rpush(store.key(f"runs:{ctx.handler_name}:{ctx.delivery_key}"), ctx.attempt)


def _in_flight(ctx: Context, seconds: float) -> None:
    r = store.client()
    counter = store.key(f"inflight:{os.getpid()}")
    r.rpush(store.key("inflight"), r.incr(counter))
    r.sadd(store.key("threads"), f"{os.getpid()}:{threading.current_thread().name}")
    try:
        _ran(ctx)
        time.sleep(seconds)
    finally:
        r.decr(counter)


@on("social_account_connected", name="threads.wide")
def wide(event: BaseEvent, ctx: Context) -> None:
    _in_flight(ctx, 0.3)


@on("social_account_connected", name="threads.wider")
def wider(event: BaseEvent, ctx: Context) -> None:
    _in_flight(ctx, 0.3)


@on("social_account_disconnected", name="threads.long")
def long_running(event: BaseEvent, ctx: Context) -> None:
    """Records its start and its end with the process's pid; takes ``long_seconds``."""
    r = store.client()
    _ran(ctx)
    r.rpush(store.key(f"started:{ctx.delivery_key}"), os.getpid())
    time.sleep(float(r.get(store.key("ctl:long_seconds")) or 1.5))
    r.rpush(store.key(f"finished:{ctx.delivery_key}"), os.getpid())
