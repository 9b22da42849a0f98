"""A handler that reports its pool process's cyclic-GC state (tests/test_pool_gc.py).

Each run records, under ``gc:<pid>``: how many objects are frozen (left out of collection),
how many sit in the oldest generation, and how many full collections the process has made.
"""

from __future__ import annotations

import gc
import os

from handlers import Context, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on("upload_completed", name="gc.reported")
def reported(event: BaseEvent, ctx: Context) -> None:
    store.client().hset(
        store.key(f"gc:{os.getpid()}"),
        mapping={
            "frozen": gc.get_freeze_count(),
            "oldest": len(gc.get_objects(generation=2)),
            "full_collections": gc.get_stats()[2]["collections"],
        },
    )
    store.client().rpush(store.key("gc-runs"), ctx.delivery_key)
