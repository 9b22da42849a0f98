"""Messages lost between Redis and a worker: found from the ledger and published again.

kombu's Redis transport takes a message off the queue (BRPOP) and records it as unacknowledged in
a second round trip. If Redis or the connection dies in between, the message is in neither place
and no worker ever sees it again, although its delivery was acknowledged with a 2xx and is kept
in Redis (docs/reliability.md: scenarios 3, 8b, 8c, 8d). Retry messages travel the same way.

So the delivery records and markers are the ledger, and messages only pointers into it. Every
``reconcile_interval_seconds`` one worker (whichever takes the lock) publishes again:

1. deliveries received more than ``reconcile_after_seconds`` ago that no worker ever claimed (no
   ``handled:<key>``, no routing dead letter); a watermark on the events index makes each
   delivery looked at once;
2. pairs in ``<prefix>:open`` (waiting for a retry, see ``Dispatcher._track_open``) whose retry
   is that much overdue and still not settled; they are looked at again after as long.

A second message for a pair is harmless: done markers and leases make it a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.deadletter import ROUTING_HANDLER, entry_id

log = logging.getLogger("uphooks.worker")

#: publish(keys, only, attempt, not_before, countdown, queue), as workers/tasks.py's.
Publish = Callable[[list[str], list[str] | None, int, float | None, float, str | None], None]

BATCH = 500


class Reaper:
    def __init__(self, client: redis.Redis, settings: Settings, publish: Publish) -> None:
        self._r = client
        self._s = settings
        self._publish = publish
        self._keys = Keys(settings.key_prefix)

    def run_once(self, node: str, now: float | None = None) -> tuple[int, int]:
        """One pass, if this worker takes the lock: (deliveries, pairs) published again."""
        now = time.time() if now is None else now
        hold = max(1, self._s.reconcile_interval_seconds - 1)
        if not self._r.set(self._keys.reaper_lock, node, nx=True, ex=hold):
            return 0, 0
        return self._never_claimed(now), self._overdue_retries(now)

    def _never_claimed(self, now: float) -> int:
        upper = now - self._s.reconcile_after_seconds
        raw = self._r.get(self._keys.reaper_watermark)
        # The first pass starts at the oldest delivery kept (the index is bounded by the
        # de-duplication window), so a message lost before any reaper ran is found too.
        lower = f"({float(raw)}" if raw else "-inf"
        rows: list[tuple[bytes, float]] = self._r.zrangebyscore(  # type: ignore[assignment]
            self._keys.events_index, lower, upper, start=0, num=BATCH, withscores=True
        )
        mark = upper
        if len(rows) == BATCH:  # more to come: stop before the last receipt time, seen whole
            last = rows[-1][1]
            rows = [r for r in rows if r[1] < last] or rows
            mark = rows[-1][1]
        keys = [k.decode() for k, _ in rows]
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.exists(self._keys.handled(key))
            pipe.exists(self._keys.dlq_entry(entry_id(key, ROUTING_HANDLER)))
            pipe.exists(self._keys.delivery(key))
        found = pipe.execute()
        lost = [
            key
            for i, key in enumerate(keys)
            if not found[3 * i] and not found[3 * i + 1] and found[3 * i + 2]
        ]
        for key in lost:
            log.warning(
                "[%s] acknowledged %.0fs ago and never claimed by a worker: its message was "
                "lost on the way (broker connection or Redis failed as it was taken); "
                "publishing it again",
                key,
                now - dict(rows)[key.encode()],
            )
            self._publish([key], None, 1, None, 0, None)
        self._r.set(self._keys.reaper_watermark, repr(mark))
        return len(lost)

    def _overdue_retries(self, now: float) -> int:
        members: list[bytes] = self._r.zrangebyscore(  # type: ignore[assignment]
            self._keys.open_pairs, "-inf", now - self._s.reconcile_after_seconds, 0, BATCH
        )
        pairs = [m.decode().rpartition("|")[::2] for m in members]
        pipe = self._r.pipeline(transaction=False)
        for key, handler in pairs:
            pipe.hmget(self._keys.handled(key), [handler, handler + "@"])
            pipe.exists(self._keys.delivery(key))
        found = pipe.execute()
        republished = 0
        for (key, handler), member, (state, info), exists in zip(
            pairs, members, found[0::2], found[1::2], strict=True
        ):
            if state in (b"done", b"dead") or not exists:
                self._r.zrem(self._keys.open_pairs, member)
                continue
            details: dict[str, Any] = orjson.loads(info) if info else {}
            attempt = int(details.get("attempt") or 0) + (1 if state == b"retrying" else 0)
            log.warning(
                "[%s %s] retry overdue by more than %ss: its message was lost on the way; "
                "publishing it again",
                key,
                handler,
                self._s.reconcile_after_seconds,
            )
            # On the default queue: a handler with a queue of its own is handed on from there.
            self._publish([key], [handler], max(attempt, 1), None, 0, None)
            self._r.zadd(self._keys.open_pairs, {member: now})
            republished += 1
        return republished


class ReaperThread:
    """Runs :meth:`Reaper.run_once` every ``reconcile_interval_seconds`` until stopped."""

    def __init__(self, reaper: Reaper, node: str, interval: float) -> None:
        self._reaper = reaper
        self._node = node
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uphooks-reaper", daemon=True)
        self._failing = False

    def start(self) -> ReaperThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._reaper.run_once(self._node)
            except Exception as exc:  # Redis down: try again next time, say so once
                if not self._failing:
                    log.warning("reaper pass failed (will keep trying): %r", exc)
                self._failing = True
            else:
                self._failing = False

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + 5)


_running: ReaperThread | None = None


def install(settings: Settings, publish: Publish) -> None:
    """Reap from the worker's main process once it is ready; stop on shutdown.

    Call once where the Celery app's signals are wired (``workers/tasks.py``).
    """
    from celery import signals

    from uphooks.redis import sync_client

    def ready(sender: Any = None, **_: Any) -> None:
        global _running
        if _running is None:
            node = str(getattr(sender, "hostname", None) or "worker")
            reaper = Reaper(sync_client(settings), settings, publish)
            _running = ReaperThread(reaper, node, settings.reconcile_interval_seconds).start()

    def shutdown(**_: Any) -> None:
        global _running
        if _running is not None:
            _running.stop()
            _running = None

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
