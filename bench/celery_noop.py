"""The bare Celery baseline: a no-op task on an app with the worker options ours uses.

Used twice: ``task.delay()`` inside an async endpoint (baseline D) and as the worker baseline that
drains a backlog (``celery -A bench.celery_noop worker``).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench import probe

BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench-noop")

app = Celery("bench", broker=BROKER, set_as_current=True)
# The options of workers/app.py that change the per-message cost, and nothing more.
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_timeout=False,
    task_acks_on_failure=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=240,
    task_time_limit=300,
    broker_transport_options={
        "visibility_timeout": 3600,
        "unacked_restore_interval": 30,
        "unacked_restore_throttle": 1,
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(*args: Any, **kwargs: Any) -> None:
    probe.count_run()
