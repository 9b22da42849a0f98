"""The Celery app: built here and nowhere else.

Every option below serves at-least-once processing: a message is acknowledged only after its
events were handled, dead-lettered or handed on to a retry message.
"""

from __future__ import annotations

from celery import Celery

from uphooks.settings import Settings, get_settings
from workers.transport import broker_settings


def create_celery(settings: Settings) -> Celery:
    target = settings.sentinel()
    broker = target.broker_url() if target is not None else settings.redis_url
    app = Celery("uphooks", broker=broker, set_as_current=True)
    app.conf.update(
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # Acknowledge after the task returned, and put the message back if the process running
        # it died (SIGKILL, OOM) or hit its hard time limit; poison messages are caught by our
        # own delivery counter (workers/dispatch.py), not by Celery.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_timeout=False,
        task_acks_on_failure=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        # One visibility timeout for every place kombu reads one. It must exceed the longest
        # countdown we ask for plus the hard time limit (checked in Settings).
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            # kombu's default sweep runs every 10 x 10 s; ours every restore_sweep_seconds.
            "unacked_restore_interval": settings.restore_sweep_seconds,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    if target is not None:
        # kombu's Sentinel transport asks the sentinels for the master on every connection, so
        # a worker follows a failover without a restart; ours adds the fix of transport.py.
        app.conf.broker_transport = "workers.sentinel_transport:SentinelTransport"
        app.conf.broker_transport_options.update(
            master_name=target.master_name,
            sentinel_kwargs={"password": target.sentinel_password, "socket_timeout": 1.0},
        )
    else:
        # Our subclass of kombu's transport for redis:// and rediss:// (workers/transport.py).
        app.conf.update(broker_settings(settings.redis_url))
    app.conf.imports = ["workers.tasks"]
    return app


celery_app = create_celery(get_settings())
