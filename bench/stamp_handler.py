"""Our latency probe (``UPHOOKS_HANDLER_MODULES=bench.stamp_handler``): the handler notes when
it started, under its delivery key, and counts its run (bench/probe.py)."""

from __future__ import annotations

from bench import probe, stamps
from handlers import Context, on
from uphooks.events import BaseEvent


@on("upload_completed", name="bench.stamp")
def stamp(event: BaseEvent, ctx: Context) -> None:
    stamps.stamp(ctx.delivery_key)
    probe.count_run()
