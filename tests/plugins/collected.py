"""A handler that reports its pool process's cyclic-GC state (tests/test_pool_gc.py).

Each run records, under ``gc:<pid>``: how many objects are frozen (left out of collection),
how many sit in the oldest generation, and how many full collections the process made since
it was forked (``gc.get_stats`` counts the parent's too).
"""

from __future__ import annotations

import gc
import os

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent

_inherited: dict[int, int] = {}  # pid: full collections made before the first run here


@on("upload_completed", name="gc.reported")
def reported(event: BaseEvent, ctx: Context) -> None:
    full = gc.get_stats()[2]["collections"]
    before = _inherited.setdefault(os.getpid(), full)
    store.client().hset(
        store.key(f"gc:{os.getpid()}"),
        mapping={
            "frozen": gc.get_freeze_count(),
            "oldest": len(gc.get_objects(generation=2)),
            "full_collections_here": full - before,
        },
    )
    store.client().rpush(store.key("gc-runs"), ctx.delivery_key)
