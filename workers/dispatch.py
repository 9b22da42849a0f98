"""One Celery message in, every (delivery, handler) pair of it handled exactly once.

For a message naming some deliveries (and optionally ``only`` some handlers):

1. if it is early (a retry hop), republish it for the next hop and stop;
2. count this delivery of the message; a message whose worker died too often is poison: split it
   into one message per delivery, and dead-letter a single-delivery one;
3. route each delivery to its handlers; pairs whose handler runs on another Celery queue are
   handed on to that queue (one message per queue, ``only`` those handlers) and not run here;
4. claim every remaining pair (done markers, leases) in one call;
5. run the claimed pairs, each under its handler's time limit; write outcomes and release leases
   in one call;
6. publish retries (one message per handler and attempt, on the handler's queue) and dead letters.

Per-handler queues: the ingress always enqueues on ``UPHOOKS_QUEUE``; a handler declared with
``queue="slow"`` is run only by workers consuming ``slow`` (``uphooks worker -Q slow``), so a slow
handler never holds up the others. Retries go straight to the handler's queue. Only the default
queue hands on, so a message moves at most once even while workers disagree on a queue. Markers
and leases are per pair, so handing on keeps each pair exactly-once whatever queue runs it.

Per-handler time limits: Celery's limits are per message, and a message holds many events. So a
handler's ``time_limit`` is enforced per call, in the process running it, with a real-time
interval timer (``SIGALRM``): the call is interrupted with :class:`HandlerTimeLimit`, a transient
error, so it is retried with backoff like any failure. This needs the task to run on the process's
main thread (prefork and solo pools, the defaults); on a thread pool the per-call limit is not
enforced and only the message's soft/hard limits apply.

Only after all of that returns does Celery acknowledge the message. If Redis fails on the way, the
task raises and the message goes back to the queue; markers make the second pass skip what the
first one finished.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import orjson
import redis

from handlers.context import Context, bound_logger
from handlers.errors import PermanentError, TransientError
from handlers.registry import HandlerSpec, Router
from uphooks import metrics
from uphooks.events import BaseEvent, EventValidationError, parse_event
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.deadletter import ROUTING_HANDLER, DeadLetter, DeadLetters
from workers.idempotency import Claim, Markers, Outcome, holder_is_dead_here, holder_token
from workers.retrying import backoff_delay, hop, publish_with_retries

log = logging.getLogger("uphooks.worker")

#: publish(keys, only, attempt, not_before, countdown, queue); queue None is UPHOOKS_QUEUE.
Publish = Callable[[list[str], list[str] | None, int, float | None, float, str | None], None]


class SoftTimeLimit(Exception):
    """Stand-in type; the task module passes Celery's SoftTimeLimitExceeded."""


class HandlerTimeLimit(TransientError):
    """A handler call ran past its ``time_limit``: counted as a failed attempt, then retried."""


_warned_no_timer = False


@contextmanager
def time_limit(seconds: float | None, name: str) -> Iterator[None]:
    """Interrupt the body with HandlerTimeLimit after ``seconds`` (main thread only)."""
    global _warned_no_timer
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        if not _warned_no_timer:
            _warned_no_timer = True
            log.warning(
                "handler time limits need the prefork or solo pool; on this pool only the "
                "task's soft and hard time limits apply"
            )
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise HandlerTimeLimit(f"handler {name!r} ran past its time limit of {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class _Pair:
    key: str
    spec: HandlerSpec
    record: dict[str, Any]
    raw_record: str
    event: BaseEvent | None
    invalid: EventValidationError | None


class Dispatcher:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        router: Router,
        publish: Publish,
        soft_limit_exc: type[BaseException] = SoftTimeLimit,
    ) -> None:
        self._r = client
        self._s = settings
        self._router = router
        self._publish = publish_with_retries(publish)
        self._soft_limit_exc = soft_limit_exc
        self._keys = Keys(settings.key_prefix)
        self._markers = Markers(
            client, self._keys, settings.lease_ttl_ms, settings.dedup_ttl_seconds
        )
        self.dead_letters = DeadLetters(client, self._keys, settings.dlq_retention_seconds)
        # Redis writes of the settle step, each retried for a while (wrapped once, not per message).
        self._finish = publish_with_retries(self._markers.finish)
        self._track_open_retried = publish_with_retries(self._track_open)
        self._add_dead_letter = publish_with_retries(self.dead_letters.add)

    # -- 1. early messages ---------------------------------------------------------------
    def process(
        self,
        task_id: str,
        keys: list[str],
        only: list[str] | None = None,
        attempt: int = 1,
        not_before: float | None = None,
        queue: str | None = None,
    ) -> None:
        """Handle one message; ``queue`` is the queue it came from (None: UPHOOKS_QUEUE)."""
        here = queue or self._s.queue
        if not_before is not None and not_before - time.time() > 0.5:
            self._publish(keys, only, attempt, not_before, hop(self._s, not_before), here)
            return

        # -- 2. delivery count and records, one round trip
        counter = self._keys.deliveries_of(task_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, 2 * self._s.visibility_timeout_seconds)
        pipe.mget([self._keys.delivery(k) for k in keys])
        deliveries, _, raws = pipe.execute()

        if deliveries > self._s.poison_max_deliveries and len(keys) > 1:
            log.error(
                "message %s died in its worker %d times; splitting its %d deliveries apart",
                task_id,
                deliveries - 1,
                len(keys),
            )
            for key in keys:
                self._publish([key], only, attempt, None, 0, here)
            return

        # -- 3. route, hand on what runs elsewhere, claim the rest
        pairs = self._hand_on(self._route(keys, raws, only, attempt), attempt, here)
        holder = holder_token(task_id)
        claims = self._markers.claim([(p.key, p.spec.name) for p in pairs], holder)
        mine: list[_Pair] = []
        deferred: list[tuple[_Pair, float, bool]] = []  # (pair, due, do we hold its lease)
        for pair, claim in zip(pairs, claims, strict=True):
            if claim.state is Claim.MINE:
                mine.append(pair)
            elif claim.state is Claim.BUSY:
                if holder_is_dead_here(claim.holder) and self._markers.take_over(
                    pair.key, pair.spec.name, claim.holder, holder
                ):
                    mine.append(pair)
                else:
                    # Another worker runs it now. Look again once its lease can have expired:
                    # by then it is done, or its holder died and we take over.
                    deferred.append((pair, time.time() + claim.ttl_ms / 1000 + 1, False))

        if deliveries > self._s.poison_max_deliveries:
            error = (
                f"the worker process died {deliveries - 1} times while handling this delivery "
                f"(limit UPHOOKS_POISON_MAX_DELIVERIES={self._s.poison_max_deliveries})"
            )
            dead_now = [(p, attempt, error, "") for p in mine]
            self._settle([], [], dead_now, deferred, holder, attempt)
            return

        # -- 4. run
        done: list[_Pair] = []
        dead: list[tuple[_Pair, int, str, str]] = []
        retry: list[tuple[_Pair, float, str]] = []
        for index, pair in enumerate(mine):
            try:
                self._run(pair, attempt)
            except self._soft_limit_exc as exc:
                retry.append((pair, time.time(), f"soft time limit: {exc!r}"))
                deferred += [(rest, time.time(), True) for rest in mine[index + 1 :]]
                break
            except PermanentError as exc:
                dead.append((pair, attempt, repr(exc), traceback.format_exc()))
            except Exception as exc:
                max_attempts = pair.spec.max_attempts or self._s.retry_max_attempts
                if attempt >= max_attempts:
                    dead.append((pair, attempt, repr(exc), traceback.format_exc()))
                else:
                    floor = exc.retry_after if isinstance(exc, TransientError) else None
                    due = time.time() + self._backoff(pair.spec, attempt, floor)
                    retry.append((pair, due, repr(exc)))
                    log.warning(
                        "[%s %s] attempt %d failed, retrying in %.0fs: %r",
                        pair.key,
                        pair.spec.name,
                        attempt,
                        due - time.time(),
                        exc,
                    )
            else:
                done.append(pair)
        self._settle(done, retry, dead, deferred, holder, attempt)

    # -- 5. outcomes, retries, dead letters -------------------------------------------
    def _settle(
        self,
        done: list[_Pair],
        retry: list[tuple[_Pair, float, str]],
        dead: list[tuple[_Pair, int, str, str]],
        deferred: list[tuple[_Pair, float, bool]],
        holder: str,
        attempt: int,
    ) -> None:
        now = time.time()
        outcomes = [
            Outcome(p.key, p.spec.name, "done", orjson.dumps({"attempt": attempt, "at": now}))
            for p in done
        ]
        outcomes += [
            Outcome(
                p.key,
                p.spec.name,
                "retrying",
                orjson.dumps({"attempt": attempt, "at": now, "next_at": due, "error": err}),
            )
            for p, due, err in retry
        ]
        outcomes += [
            Outcome(
                p.key,
                p.spec.name,
                "dead",
                orjson.dumps({"attempt": n, "at": now, "error": err}),
            )
            for p, n, err, _ in dead
        ]
        # Pairs we claimed but did not run (the soft time limit cut the batch short) give
        # their lease back; pairs another worker holds are not ours to touch.
        outcomes += [
            Outcome(p.key, p.spec.name, "queued", orjson.dumps({"at": now}))
            for p, _, held in deferred
            if held
        ]
        self._finish(outcomes, holder)
        self._track_open_retried(done, retry, dead, deferred)
        metrics.handler_outcomes(
            done=(p.spec.name for p in done),
            retried=(p.spec.name for p, _, _ in retry),
            dead=(p.spec.name for p, _, _, _ in dead),
        )

        for p, n, err, tb in dead:
            log.error("[%s %s] dead-lettered after %d attempt(s): %s", p.key, p.spec.name, n, err)
            self._add_dead_letter(
                DeadLetter(
                    key=p.key,
                    handler=p.spec.name,
                    event=str(p.record.get("event")),
                    attempts=n,
                    error=err,
                    traceback=tb,
                    first_received_at=float(p.record.get("received_at") or now),
                    dead_at=now,
                    record=p.raw_record,
                )
            )

        groups: dict[tuple[str, int, int], list[str]] = defaultdict(list)
        for p, due, _ in retry:
            groups[(p.spec.name, attempt + 1, math.ceil(due))].append(p.key)
        for p, due, _ in deferred:
            groups[(p.spec.name, attempt, math.ceil(due))].append(p.key)
        for (handler, next_attempt, due), keys in groups.items():
            queue = self._queue_of(handler)
            self._publish(keys, [handler], next_attempt, float(due), hop(self._s, due, now), queue)

    def _track_open(
        self,
        done: list[_Pair],
        retry: list[tuple[_Pair, float, str]],
        dead: list[tuple[_Pair, int, str, str]],
        deferred: list[tuple[_Pair, float, bool]],
    ) -> None:
        """List the pairs that wait for a retry message, by when it is due, and unlist the
        settled ones: a retry message lost between Redis and a worker is found by the reaper."""
        closed = [f"{p.key}|{p.spec.name}" for p in done]
        closed += [f"{p.key}|{p.spec.name}" for p, _, _, _ in dead]
        waiting = {f"{p.key}|{p.spec.name}": due for p, due, _ in retry}
        waiting |= {f"{p.key}|{p.spec.name}": due for p, due, _ in deferred}
        if not closed and not waiting:
            return
        pipe = self._r.pipeline(transaction=False)
        if closed:
            pipe.zrem(self._keys.open_pairs, *closed)
        if waiting:
            pipe.zadd(self._keys.open_pairs, waiting)
        pipe.execute()

    # -- helpers -------------------------------------------------------------------------
    def _queue_of(self, handler: str) -> str:
        spec = self._router.get(handler)
        return (spec.queue if spec is not None else None) or self._s.queue

    def _hand_on(self, pairs: list[_Pair], attempt: int, here: str) -> list[_Pair]:
        """Publish the pairs whose handler has another queue there; return the pairs for here.

        Only messages on the default queue are handed on. A message on a handler's queue holds
        only pairs for it, unless workers disagree on a handler's queue (a deploy half done):
        then the pair runs here rather than bounce between queues.
        """
        default = self._s.queue
        if here != default:
            foreign = sorted({p.spec.name for p in pairs if (p.spec.queue or default) != here})
            if foreign:
                log.warning(
                    "handler(s) %s came on queue %r but are declared for another queue here; "
                    "running them anyway. Do all workers load the same handler code?",
                    foreign,
                    here,
                )
            return pairs
        local: list[_Pair] = []
        elsewhere: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
        for pair in pairs:
            queue = pair.spec.queue or default
            if queue == here:
                local.append(pair)
            else:
                keys, names = elsewhere.setdefault(queue, ({}, {}))
                keys[pair.key] = None
                names[pair.spec.name] = None
        for queue, (keys, names) in elsewhere.items():
            self._publish(list(keys), list(names), attempt, None, 0, queue)
        return local

    def _backoff(self, spec: HandlerSpec, attempt: int, floor: float | None) -> float:
        if spec.backoff is None:
            base, maximum = self._s.retry_base_delay_seconds, self._s.retry_max_delay_seconds
        else:
            base, maximum = spec.backoff.base, spec.backoff.max
        return backoff_delay(base, maximum, attempt, floor)

    def _route(
        self, keys: list[str], raws: list[bytes | None], only: list[str] | None, attempt: int
    ) -> list[_Pair]:
        pairs: list[_Pair] = []
        for key, raw in zip(keys, raws, strict=True):
            if raw is None:
                log.error(
                    "[%s] the stored delivery is gone (older than UPHOOKS_DEDUP_TTL_SECONDS?); "
                    "nothing to process",
                    key,
                )
                continue
            raw_record = raw.decode(errors="replace")
            try:
                record = orjson.loads(raw)
                payload = orjson.loads(record["body"])
                name = str(record["event"])
                specs = self._router.handlers_for(name, payload)
            except Exception as exc:
                # A record we cannot read would fail on every redelivery: keep it for a human.
                self._dead_routing(key, raw_record, attempt, exc)
                continue
            if only is not None:
                specs = [s for s in specs if s.name in only]
                for missing in set(only) - {s.name for s in self._router}:
                    log.error(
                        "[%s] handler %r is not registered in this worker; is its module in "
                        "UPHOOKS_HANDLER_MODULES? Replay the dead letter once it is.",
                        key,
                        missing,
                    )
                    self._dead_unknown_handler(key, missing, record, raw_record, attempt)
            try:
                event: BaseEvent | None = parse_event(payload)
                invalid = None
            except EventValidationError as exc:
                event, invalid = None, exc
            for spec in specs:
                pairs.append(_Pair(key, spec, record, raw_record, event, invalid))
        return pairs

    def _dead_routing(self, key: str, raw: str, attempt: int, exc: BaseException) -> None:
        now = time.time()
        log.error("[%s] could not be routed, dead-lettered: %r", key, exc)
        self.dead_letters.add(
            DeadLetter(
                key=key,
                handler=ROUTING_HANDLER,
                event="?",
                attempts=attempt,
                error=repr(exc),
                traceback="".join(traceback.format_exception(exc)),
                first_received_at=now,
                dead_at=now,
                record=raw,
            )
        )

    def give_up(self, task_id: str, keys: list[str], exc: BaseException) -> bool:
        """After a message failed in a way that is not a handler's (a bug, a broken record) more
        times than the poison limit, dead-letter its deliveries instead of requeueing it again:
        a requeued message comes straight back, so without this it would loop hot for ever.

        Returns False (requeue) while under the limit, or when Redis itself is the problem.
        """
        try:
            seen = int(self._r.get(self._keys.deliveries_of(task_id)) or 0)
            if seen <= self._s.poison_max_deliveries:
                return False
            raws: list[bytes | None] = self._r.mget(  # type: ignore[assignment]
                [self._keys.delivery(k) for k in keys]
            )
            for key, raw in zip(keys, raws, strict=True):
                self._dead_routing(key, (raw or b"{}").decode(errors="replace"), seen, exc)
        except Exception:
            log.exception("message %s not dead-lettered; it goes back to the queue", task_id)
            return False
        return True

    def _dead_unknown_handler(
        self, key: str, handler: str, record: dict[str, Any], raw: str, attempt: int
    ) -> None:
        now = time.time()
        metrics.handler_outcomes(dead=[handler])
        self.dead_letters.add(
            DeadLetter(
                key=key,
                handler=handler,
                event=str(record.get("event")),
                attempts=attempt,
                error=f"handler {handler!r} is not registered in the worker",
                traceback="",
                first_received_at=float(record.get("received_at") or now),
                dead_at=now,
                record=raw,
            )
        )

    def _run(self, pair: _Pair, attempt: int) -> None:
        if pair.invalid is not None:
            raise PermanentError(str(pair.invalid)) from pair.invalid
        assert pair.event is not None
        name = pair.spec.name
        ctx = Context(
            idempotency_key=f"{pair.key}:{name}",
            delivery_key=pair.key,
            handler_name=name,
            attempt=attempt,
            event_name=str(pair.record["event"]),
            received_at=float(pair.record.get("received_at") or 0.0),
            headers=pair.record.get("headers") or {},
            log=bound_logger(pair.key, name),
            body=pair.record.get("body") or "",
        )
        with metrics.handler_call(name) as timer:
            if pair.spec.time_limit is None:
                pair.spec.func(pair.event, ctx)
            else:
                with time_limit(pair.spec.time_limit, name):
                    pair.spec.func(pair.event, ctx)
        log.info(
            "[%s %s] done in %.0f ms (attempt %d)", pair.key, name, timer.seconds * 1000, attempt
        )
