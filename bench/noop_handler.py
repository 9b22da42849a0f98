"""The one no-op handler our workers run in the benchmark (``UPHOOKS_HANDLER_MODULES``).

It only counts its runs (bench/probe.py): what is measured is the worker path around it
(routing, idempotency claim, done markers). The driver checks the count and every done marker.
"""

from __future__ import annotations

from bench import memtrace, probe
from handlers import Context, on
from uphooks.events import BaseEvent


@on("upload_completed", name="bench.noop")
def noop(event: BaseEvent, ctx: Context) -> None:
    probe.count_run()


__all__ = ["memtrace", "noop"]  # memtrace: opt-in tracing of the pool children
