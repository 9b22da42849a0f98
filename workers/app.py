"""The Celery app: built here and nowhere else, with the options of workers/celery_options.py."""

from __future__ import annotations

from celery import Celery

from uphooks.settings import Settings, get_settings
from workers.celery_options import delivery_options
from workers.transport import broker_settings


def create_celery(settings: Settings) -> Celery:
    target = settings.sentinel()
    broker = target.broker_url() if target is not None else settings.redis_url
    app = Celery("uphooks", broker=broker, set_as_current=True)
    app.conf.update(
        delivery_options(
            settings.queue,
            soft_time_limit=settings.task_soft_time_limit_seconds,
            time_limit=settings.task_time_limit_seconds,
            visibility_timeout=settings.visibility_timeout_seconds,
            restore_sweep=settings.restore_sweep_seconds,
        ),
        worker_concurrency=settings.worker_concurrency,
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
