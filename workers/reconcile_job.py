"""The periodic reconciliation pass (uphooks/reconcile.py), run by whichever worker comes first.

Every worker's main process ticks; the first to take the lock (``SET NX PX`` for one interval)
runs one pass and the others find the lock taken, so there is one pass per
``UPHOOKS_RECONCILE_INTERVAL_SECONDS`` across all workers and no worker is special. A second lock
held while a pass runs keeps a pass that outlasts its interval from overlapping the next (an
overlap would be harmless, the injection is atomic, but it would spend the API budget twice).
Off unless ``UPHOOKS_RECONCILE_ENABLED``.
"""

from __future__ import annotations

import logging
import uuid

import redis

from receiver.inject import inject
from uphooks.provider_api import ProviderAPIError
from uphooks.readback import ReadBack
from uphooks.reconcile import Reconciler
from uphooks.settings import Settings
from workers.background import Periodic, while_worker_runs

log = logging.getLogger("uphooks.worker")

#: A running pass keeps its lock at most this long (a pass is bounded by its request budget).
RUNNING_SECONDS = 3600
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


class ReconcileJob:
    def __init__(self, client: redis.Redis, settings: Settings, tick: float | None = None) -> None:
        self._r = client
        self._s = settings
        self._tick = tick or min(settings.reconcile_interval_seconds, 5.0)
        self._interval_key = f"{settings.key_prefix}:reconcile:lock"
        self._running_key = f"{settings.key_prefix}:reconcile:running"

    def start(self) -> Periodic:
        """Tick from a background thread until the returned loop is stopped."""
        what = "reconcile pass"
        return Periodic("uphooks-reconcile", self._tick, self.tick, log=log, what=what).start()

    def run_once(self) -> bool:
        """Run a pass if this worker takes the lock; True when it ran one."""
        interval_ms = int(self._s.reconcile_interval_seconds * 1000)
        token = uuid.uuid4().hex
        if not self._r.set(self._interval_key, token, nx=True, px=interval_ms):
            return False
        if not self._r.set(self._running_key, token, nx=True, ex=RUNNING_SECONDS):
            return False
        try:
            with ReadBack.from_settings(self._s, budget=self._s.reconcile_request_budget) as api:
                result = Reconciler(self._r, self._s, inject).run(api)
            log.info(
                "reconcile pass: %d history items read, %d in range, %d injected, %d requests%s",
                result.looked_at,
                len(result.found),
                result.injected,
                result.requests,
                f"; cut short: {result.stopped}" if not result.complete else "",
            )
        finally:
            self._r.eval(_RELEASE, 1, self._running_key, token)
        return True

    def tick(self) -> None:
        """:meth:`run_once`; the provider's API failing is said plainly (the next tick retries)."""
        try:
            self.run_once()
        except ProviderAPIError as exc:
            log.warning("reconcile pass failed: %s", exc)


def install(settings: Settings) -> None:
    """Start the job in the worker's main process once it is ready (when enabled)."""
    if not settings.reconcile_enabled:
        return
    from uphooks.redis import sync_client

    while_worker_runs(lambda: ReconcileJob(sync_client(settings, timeout=10), settings).start())
