"""The one Celery task, ``uphooks.process``, and the worker's start-up wiring."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import signals
from celery.exceptions import Reject, SoftTimeLimitExceeded

from uphooks import logs, metrics
from uphooks.redis import sync_client
from uphooks.redis_checks import check_redis
from uphooks.settings import get_settings
from uphooks.taskmessage import PROCESS_TASK
from workers import heartbeat, indexes, notify, pool_gc, reconcile_job, schedule
from workers.app import celery_app
from workers.dispatch import Dispatcher
from workers.metrics import serve_worker_metrics
from workers.plugins import Loaded, load_handlers

log = logging.getLogger("uphooks.worker")

_loaded: Loaded | None = None
_dispatcher: tuple[int, Dispatcher] | None = None


def loaded_handlers() -> Loaded:
    global _loaded
    if _loaded is None:
        _loaded = load_handlers(get_settings())
    return _loaded


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
@signals.celeryd_init.connect  # type: ignore[untyped-decorator]
def _set_up_logging(**_: Any) -> None:
    """JSON or plain lines (UPHOOKS_LOG_FORMAT) instead of Celery's own set-up. Also on
    ``celeryd_init``: Celery sends ``setup_logging`` only after ``worker_init``, whose lines
    (the handlers loaded, Redis checks) would otherwise go out unformatted or not at all."""
    logs.configure(get_settings(), "worker", capture_warnings=True)


# Each beat carries this worker's handlers, so workers on one queue that differ are told.
heartbeat.install(get_settings(), lambda: (spec.name for spec in loaded_handlers().router))


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _load_plugins_at_start(**_: Any) -> None:
    """Import every handler module in the main process, before the pool forks: a plugin that
    fails to import stops the worker here, with its name, instead of losing its events later."""
    try:
        loaded = loaded_handlers()
    except Exception as exc:
        log.critical("worker not started: %s", exc)
        raise SystemExit(f"uphooks worker not started: {exc}") from exc
    log.info("handlers: %s", ", ".join(sorted(s.name for s in loaded.router)) or "none")
    # Before the pool forks: every pool process writes its metrics where this one reads them.
    settings = get_settings()
    client = sync_client(settings)
    try:
        for finding in check_redis(client, settings):
            log.log(finding.level, "%s", finding)
    finally:
        client.close()
    metrics.prepare_multiprocess("worker", settings)
    serve_worker_metrics(settings, (spec.queue for spec in loaded.router))


def publish(keys: list[str]) -> None:
    """Publish a route message for ``keys`` on UPHOOKS_QUEUE (splitting a poison message)."""
    process.apply_async(
        args=[keys],
        queue=get_settings().queue,
        retry=False,  # the dispatcher retries with tenacity, and knows when to give up
    )


schedule.install(get_settings())
notify.install(get_settings())
reconcile_job.install(get_settings())
indexes.install(get_settings())
pool_gc.install(get_settings())


def dispatcher() -> Dispatcher:
    """One per process: Redis connections must not cross a fork."""
    global _dispatcher
    if _dispatcher is None or _dispatcher[0] != os.getpid():
        settings = get_settings()
        _dispatcher = (
            os.getpid(),
            Dispatcher(
                sync_client(settings),
                settings,
                loaded_handlers().router,
                publish,
                soft_limit_exc=SoftTimeLimitExceeded,
            ),
        )
    return _dispatcher[1]


@celery_app.task(name=PROCESS_TASK, bind=True)  # type: ignore[untyped-decorator]
def process(
    self: Any, keys: list[str], pairs: list[list[str]] | None = None, **legacy: Any
) -> None:
    """A route message (``keys``) or a pair message (``pairs``): uphooks/taskmessage.py."""
    if legacy:
        # A message of uphooks 0.1 (``only``/``attempt``/``not_before``): route its deliveries;
        # pairs already routed are left to the ledger (see the upgrade note in docs/design.md).
        log.warning("message %s has an old format (%s); routed anew", self.request.id, legacy)
    # The queue this message came from: pairs whose handler has another queue are handed on.
    info = self.request.delivery_info or {}
    queue = info.get("routing_key")
    refs = [(str(k), str(h), str(t)) for k, h, t in pairs] if pairs else None
    try:
        # Unsure whether it was handed out before: counted before routing, as a redelivery is.
        redelivered = info.get("redelivered") is not False
        dispatcher().process(self.request.id, keys, refs, queue, redelivered)
    except Reject:
        raise
    except Exception as exc:
        # Redis failed under us (or a bug). Never acknowledge what was not settled: back to the
        # queue; markers skip what is done. Past the poison limit the deliveries are
        # dead-lettered instead, so a message that always fails cannot loop for ever.
        if dispatcher().give_up(self.request.id, keys, exc):
            return
        log.exception("message %s goes back to the queue: %r", self.request.id, exc)
        raise Reject(repr(exc), requeue=True) from exc
