"""One Celery message in, every (delivery, handler) pair of it handled exactly once.

For a message naming some deliveries (and optionally ``only`` some handlers):

1. if it is early (a retry hop), republish it for the next hop and stop;
2. count this delivery of the message; a message whose worker died too often is poison: split it
   into one message per delivery, and dead-letter a single-delivery one;
3. route each delivery to its handlers, claim every pair (done markers, leases) in one call;
4. run the claimed pairs; write outcomes and release leases in one call;
5. publish retries (one message per handler and attempt) and dead letters.

Only after all of that returns does Celery acknowledge the message. If Redis fails on the way, the
task raises and the message goes back to the queue; markers make the second pass skip what the
first one finished.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from handlers.context import Context, bound_logger
from handlers.errors import PermanentError, TransientError
from handlers.registry import HandlerSpec, Router
from uphooks.events import BaseEvent, EventValidationError, parse_event
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.deadletter import DeadLetter, DeadLetters
from workers.idempotency import Claim, Markers, Outcome, holder_is_dead_here, holder_token
from workers.retrying import backoff_delay, hop, publish_with_retries

log = logging.getLogger("uphooks.worker")

#: publish(keys, only, attempt, not_before, countdown)
Publish = Callable[[list[str], list[str] | None, int, float | None, float], None]


class SoftTimeLimit(Exception):
    """Stand-in type; the task module passes Celery's SoftTimeLimitExceeded."""


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

    # -- 1. early messages ---------------------------------------------------------------
    def process(
        self,
        task_id: str,
        keys: list[str],
        only: list[str] | None = None,
        attempt: int = 1,
        not_before: float | None = None,
    ) -> None:
        if not_before is not None and not_before - time.time() > 0.5:
            self._publish(keys, only, attempt, not_before, hop(self._s, not_before))
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
                self._publish([key], only, attempt, None, 0)
            return

        # -- 3. route and claim
        pairs = self._route(keys, raws, only, attempt)
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
                    due = time.time() + backoff_delay(self._s, attempt, floor)
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
        publish_with_retries(self._markers.finish)(outcomes, holder)

        for p, n, err, tb in dead:
            log.error("[%s %s] dead-lettered after %d attempt(s): %s", p.key, p.spec.name, n, err)
            publish_with_retries(self.dead_letters.add)(
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
            groups[(p.spec.name, attempt + 1, int(due))].append(p.key)
        for p, due, _ in deferred:
            groups[(p.spec.name, attempt, int(due))].append(p.key)
        for (handler, next_attempt, due), keys in groups.items():
            self._publish(keys, [handler], next_attempt, float(due), hop(self._s, due, now))

    # -- helpers -------------------------------------------------------------------------
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
            raw_record = raw.decode()
            record = orjson.loads(raw)
            payload = orjson.loads(record["body"])
            name = str(record["event"])
            specs = self._router.handlers_for(name, payload)
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

    def _dead_unknown_handler(
        self, key: str, handler: str, record: dict[str, Any], raw: str, attempt: int
    ) -> None:
        now = time.time()
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
        )
        pair.spec.func(pair.event, ctx)
