"""The Celery options that decide how a message is acknowledged and what each one costs.

Every option here serves at-least-once processing: a message is acknowledged only after its
events were handled, dead-lettered or handed on to a retry message. workers/app.py builds the
worker's app with them; bench/celery_noop.py builds the bare baseline with the same ones, so the
benchmark compares the work, not the configuration.
"""

from __future__ import annotations

from typing import Any


def delivery_options(
    queue: str,
    *,
    soft_time_limit: int,
    time_limit: int,
    visibility_timeout: int,
    restore_sweep: int,
) -> dict[str, Any]:
    """The options for ``app.conf.update`` (the broker's URL and transport are the caller's)."""
    return {
        "task_default_queue": queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # Acknowledge after the task returned, and put the message back if the process running
        # it died (SIGKILL, OOM) or hit its hard time limit; poison messages are caught by our
        # own delivery counter (workers/dispatch.py), not by Celery.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_timeout": False,
        "task_acks_on_failure": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": soft_time_limit,
        "task_time_limit": time_limit,
        # One visibility timeout for every place kombu reads one. It must exceed the longest
        # countdown we ask for plus the hard time limit (checked in Settings).
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            # kombu's default sweep runs every 10 x 10 s; ours every restore_sweep seconds.
            "unacked_restore_interval": restore_sweep,
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }
