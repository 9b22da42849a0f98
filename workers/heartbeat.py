"""The worker says it is alive: its node name in ``<prefix>:worker-heartbeat``, every few seconds.

A thread in the worker's main process writes the beat (scored with the Redis server's clock, so
readers on other hosts need no synchronised clocks) and, on a warm shutdown, removes it, so
``/readyz`` and ``uphooks status`` tell "ingress up, nobody processing" at once. A worker killed
outright stops beating and drops out after ``UPHOOKS_HEARTBEAT_STALE_SECONDS``.

Each beat also writes the queues this worker consumes and the handlers it loaded, and reads the
other live workers' back: workers on one queue that load different handlers are logged as a
warning by every one of them (``uphooks/liveness.py`` says why that loses work).

The read side is ``uphooks/liveness.py`` (the ingress may not import ``workers``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import redis

from uphooks.keys import Keys
from uphooks.liveness import HandlerMismatch, info_key, workers_seen
from uphooks.settings import Settings
from workers.background import Periodic

log = logging.getLogger("uphooks.worker")

# Nodes not seen for this long are forgotten (so the set does not collect every old node name);
# the key itself expires after the same time without any beat.
FORGET_AFTER_SECONDS = 24 * 3600
# A mismatch that persists is logged again this often (and at once whenever it changes).
MISMATCH_REPEAT_SECONDS = 300.0

_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local horizon = now - tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon)) do
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return tostring(now)
"""


class Heartbeat:
    """Beats every ``interval`` seconds from a daemon thread until :meth:`stop`.

    With ``queues`` and ``handlers`` each beat also publishes them, and compares them with the
    other live workers' (seen within ``stale_seconds``).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        node: str,
        interval: float,
        *,
        queues: Iterable[str] = (),
        handlers: Iterable[str] = (),
        stale_seconds: float | None = None,
    ) -> None:
        self.node = node
        self.queues = tuple(dict.fromkeys(queues))
        self.handlers = tuple(sorted(set(handlers)))
        self._client = client
        self._keys = keys
        self._key = keys.worker_heartbeat
        self._info_key = info_key(keys)
        self._interval = interval
        self._stale = stale_seconds if stale_seconds is not None else 6 * interval
        self._script = client.register_script(_BEAT)
        self._loop: Periodic | None = None
        self._failing = False
        self._mismatch_said: tuple[str, float] | None = None  # (what, when) last logged

    def _info(self) -> str:
        if not self.queues:
            return ""
        return orjson.dumps({"queues": self.queues, "handlers": self.handlers}).decode()

    def beat(self) -> bool:
        """One beat; a Redis failure is logged (once per outage), never raised."""
        try:
            self._script(
                keys=[self._key, self._info_key],
                args=[self.node, FORGET_AFTER_SECONDS, self._info()],
            )
        except redis.RedisError as exc:
            if not self._failing:
                log.warning("heartbeat of %s not written (will keep trying): %s", self.node, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat of %s written again", self.node)
        self._failing = False
        return True

    def mismatches(self) -> tuple[HandlerMismatch, ...]:
        """Queues of this worker whose live workers load different handlers."""
        seen = workers_seen(self._client, self._keys, self._stale)
        return tuple(m for m in seen.mismatches if m.queue in self.queues)

    def check_handlers(self, now: float | None = None) -> tuple[HandlerMismatch, ...]:
        """Log a mismatch when it appears or changes, again every few minutes while it lasts,
        and once when it is gone. A Redis failure is left to :meth:`beat` to report."""
        if not self.queues:
            return ()
        try:
            found = self.mismatches()
        except redis.RedisError:
            return ()
        now = time.monotonic() if now is None else now
        said = self._mismatch_said
        if found:
            what = " | ".join(m.describe() for m in found)
            if said is None or said[0] != what or now - said[1] >= MISMATCH_REPEAT_SECONDS:
                for mismatch in found:
                    log.warning(
                        "HANDLER MISMATCH: %s",
                        mismatch.describe(),
                        extra={"handler_mismatch": mismatch.as_dict()},
                    )
                self._mismatch_said = (what, now)
        elif said is not None:
            log.info("handler sets agree again on queues %s", ", ".join(self.queues))
            self._mismatch_said = None
        return found

    def start(self) -> Heartbeat:
        self.beat()
        self.check_handlers()
        self._loop = Periodic(
            "uphooks-heartbeat", self._interval, self._beat_and_check, log=log, what="heartbeat"
        ).start()
        return self

    def _beat_and_check(self) -> None:
        if self.beat():
            self.check_handlers()

    def stop(self, *, remove: bool = True) -> None:
        """Stop beating; ``remove`` takes the node out at once (a clean shutdown)."""
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if remove:
            try:
                pipe = self._client.pipeline(transaction=True)
                pipe.zrem(self._key, self.node)
                pipe.hdel(self._info_key, self.node)
                pipe.execute()
            except redis.RedisError as exc:
                log.warning("heartbeat of %s not removed: %s", self.node, exc)


_running: Heartbeat | None = None


def start(
    settings: Settings, node: str, queues: Iterable[str] = (), handlers: Iterable[str] = ()
) -> Heartbeat:
    """Start this process's heartbeat (idempotent)."""
    global _running
    if _running is None:
        from uphooks.redis import sync_client

        client = sync_client(settings, timeout=min(5.0, settings.heartbeat_interval_seconds))
        _running = Heartbeat(
            client,
            Keys(settings.key_prefix),
            node,
            settings.heartbeat_interval_seconds,
            queues=queues,
            handlers=handlers,
            stale_seconds=settings.heartbeat_stale_seconds,
        ).start()
        log.info(
            "heartbeat: %s every %gs in %s; queues %s; handlers: %s",
            node,
            settings.heartbeat_interval_seconds,
            Keys(settings.key_prefix).worker_heartbeat,
            ", ".join(_running.queues) or "unknown",
            ", ".join(_running.handlers) or "none",
        )
    return _running


def stop() -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None


def _queues_of(consumer: Any) -> list[str]:
    """The queues a Celery consumer reads (after ``-Q`` was applied)."""
    try:
        return [str(name) for name in consumer.app.amqp.queues.consume_from]
    except AttributeError:
        return []


def install(settings: Settings, handler_names: Callable[[], Iterable[str]] | None = None) -> None:
    """Beat from the worker's main process once it is ready; stop (and leave) on shutdown.

    ``handler_names`` gives the handlers this worker loaded: with it, every beat publishes
    them with the worker's queues, and a worker whose queue-mates load other handlers says so.
    Call once where the Celery app's signals are wired (``workers/tasks.py``).
    """
    from celery import signals

    def ready(sender: Any = None, **_: Any) -> None:
        node = getattr(sender, "hostname", None) or "worker"
        queues = _queues_of(sender) if handler_names is not None else []
        start(settings, str(node), queues, handler_names() if handler_names else ())

    def shutdown(**_: Any) -> None:
        stop()

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
