"""The worker says it is alive: its node name in ``<prefix>:worker-heartbeat``, every few seconds.

A thread in the worker's main process writes the beat (scored with the Redis server's clock, so
readers on other hosts need no synchronised clocks) and, on a warm shutdown, removes it, so
``/readyz`` and ``uphooks status`` tell "ingress up, nobody processing" at once. A worker killed
outright stops beating and drops out after ``UPHOOKS_HEARTBEAT_STALE_SECONDS``.

The read side is ``uphooks/liveness.py`` (the ingress may not import ``workers``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from uphooks.keys import Keys
from uphooks.settings import Settings

log = logging.getLogger("uphooks.worker")

# Nodes not seen for this long are forgotten (so the set does not collect every old node name);
# the key itself expires after the same time without any beat.
FORGET_AFTER_SECONDS = 24 * 3600

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return tostring(now)
"""


class Heartbeat:
    """Beats every ``interval`` seconds from a daemon thread until :meth:`stop`."""

    def __init__(self, client: redis.Redis, keys: Keys, node: str, interval: float) -> None:
        self.node = node
        self._client = client
        self._key = keys.worker_heartbeat
        self._interval = interval
        self._script = client.register_script(_BEAT)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self) -> bool:
        """One beat; a Redis failure is logged (once per outage), never raised."""
        try:
            self._script(keys=[self._key], args=[self.node, FORGET_AFTER_SECONDS])
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("heartbeat of %s not written (will keep trying): %s", self.node, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat of %s written again", self.node)
        self._failing = False
        return True

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="uphooks-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.beat()

    def stop(self, *, remove: bool = True) -> None:
        """Stop beating; ``remove`` takes the node out at once (a clean shutdown)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + 5)
            self._thread = None
        if remove:
            try:
                self._client.zrem(self._key, self.node)
            except redis.RedisError as exc:
                log.warning("heartbeat of %s not removed: %s", self.node, exc)


_running: Heartbeat | None = None


def start(settings: Settings, node: str) -> Heartbeat:
    """Start this process's heartbeat (idempotent)."""
    global _running
    if _running is None:
        from uphooks.redis import sync_client

        client = sync_client(settings, timeout=min(5.0, settings.heartbeat_interval_seconds))
        _running = Heartbeat(
            client, Keys(settings.key_prefix), node, settings.heartbeat_interval_seconds
        ).start()
        log.info(
            "heartbeat: %s every %gs in %s",
            node,
            settings.heartbeat_interval_seconds,
            Keys(settings.key_prefix).worker_heartbeat,
        )
    return _running


def stop() -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None


def install(settings: Settings) -> None:
    """Beat from the worker's main process once it is ready; stop (and leave) on shutdown.

    Call once where the Celery app's signals are wired (``workers/tasks.py``).
    """
    from celery import signals

    def ready(sender: Any = None, **_: Any) -> None:
        node = getattr(sender, "hostname", None) or "worker"
        start(settings, str(node))

    def shutdown(**_: Any) -> None:
        stop()

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
