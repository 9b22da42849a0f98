"""The worker-side operations wiring, applied from a plugin module.

A plugin is imported in the worker's main process at ``worker_init``, before the pool forks:
the same moment ``workers/tasks.py`` wires heartbeat and metrics. So this module exercises those
calls in a real prefork worker until that wiring lands.
"""

from __future__ import annotations

import os
import time

from handlers import Context, on
from tests.plugins import store
from uphooks import metrics
from uphooks.events import BaseEvent
from uphooks.settings import get_settings
from workers import heartbeat
from workers import metrics as worker_metrics

_settings = get_settings()
heartbeat.install(_settings)
if _settings.worker_metrics_port:
    metrics.prepare_multiprocess("worker", _settings)
    worker_metrics.serve_worker_metrics(_settings)


PROBE = "test.metered.probe"


@on("*", name="test.metered")
def metered(event: BaseEvent, ctx: Context) -> None:
    # The calls the dispatcher makes around every handler, under a name of this probe's own
    # (so they count the same whether the dispatcher's own calls are wired in yet or not).
    with worker_metrics.handler_call(PROBE):
        time.sleep(0.15)
        # Hold the first runs until a second pool process runs one too (at most 5 s), so a
        # loaded machine whose requests arrive slowly still spreads them over both children.
        pids = store.key("metered:pids")
        store.client().sadd(pids, os.getpid())
        deadline = time.monotonic() + 5
        while store.client().scard(pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    worker_metrics.handler_outcomes(done=[PROBE])
    store.record(ctx.handler_name, str(os.getpid()))
