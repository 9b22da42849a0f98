"""The bare Celery baseline: a no-op task on an app with the worker options ours uses.

Used twice: ``task.delay()`` inside an async endpoint (baseline D) and as the worker baseline that
drains a backlog (``celery -A bench.celery_noop worker``).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench import probe
from workers.celery_options import delivery_options

BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench-noop")

app = Celery("bench", broker=BROKER, set_as_current=True)
# The options of workers/app.py that change the per-message cost, and nothing more: the same
# ones (workers/celery_options.py), at their defaults.
app.conf.update(
    delivery_options(
        QUEUE, soft_time_limit=240, time_limit=300, visibility_timeout=3600, restore_sweep=30
    )
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(*args: Any, **kwargs: Any) -> None:
    probe.count_run()
