"""One Celery message in: its pairs admitted, claimed, run and settled through the ledger.

The steps, each decided elsewhere:

1. **Read** the stored deliveries the message names, and count this delivery of the message
   (one round trip). A route message whose worker died too often while routing is poison: split
   into one message per delivery, then dead-lettered.
2. **Route** a route message's deliveries to their handlers (handlers/registry.py) and **admit**
   them into the ledger (workers/ledger.py): the first copy creates the pairs and claims those
   this queue runs; pairs of a handler with its own queue are scheduled for that queue. A pair
   message's pairs are **claimed** with their token instead. Either way only pairs this run now
   owns are run; everything else is a no-op.
3. **Run** the claimed pairs, each under its handler's time limit, their leases renewed
   meanwhile (workers/leases.py).
4. **Decide** each failure (workers/retrying.py: retry when, or dead) and **settle** all
   outcomes in one call: done markers, the next attempt scheduled in Redis, dead letters.

Celery acknowledges the message after that. If Redis fails on the way, the message goes back to
the queue; the ledger makes the second pass skip what the first one finished, and a run whose
settle never happened is found by its lapsed lease.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from handlers.context import Context, bound_logger
from handlers.errors import PermanentError
from handlers.registry import HandlerSpec, Router
from uphooks import tracing
from uphooks.events import BaseEvent, EventValidationError, parse_event
from uphooks.settings import Settings
from uphooks.taskmessage import PairRef
from workers import metrics
from workers.deadletter import ROUTING_HANDLER, DeadLetter
from workers.leases import LeaseKeeper, holder_is_dead_here, holder_token
from workers.ledger import Claim, Ledger, Route, Settlement, order_member, order_set
from workers.retrying import Dead, RetryPolicy, with_redis_retries
from workers.schedule import Scheduler
from workers.time_limits import SoftTimeLimit, time_limit

log = logging.getLogger("uphooks.worker")

#: Settle finished pairs at least this often within one message (seconds).
SETTLE_EVERY = 0.05

#: publish(keys): a route message on UPHOOKS_QUEUE (used to split a poison message).
Publish = Callable[[list[str]], None]


@dataclass
class _Delivery:
    """A stored delivery, read once per message."""

    key: str
    raw: str
    record: dict[str, Any]
    payload: Any
    _event: BaseEvent | EventValidationError | None = field(default=None, repr=False)

    def event(self) -> BaseEvent:
        """The typed event, parsed once per delivery; a payload our models refuse is permanent."""
        if self._event is None:
            try:
                self._event = parse_event(self.payload)
            except EventValidationError as exc:
                self._event = exc
        if isinstance(self._event, EventValidationError):
            raise PermanentError(str(self._event)) from self._event
        return self._event

    @classmethod
    def parse(cls, key: str, raw: bytes) -> _Delivery:
        record = orjson.loads(raw)
        return cls(key, raw.decode(errors="replace"), record, orjson.loads(record["body"]))

    @property
    def event_name(self) -> str:
        return str(self.record.get("event"))

    @property
    def received_at(self) -> float:
        return float(self.record.get("received_at") or 0.0)

    @property
    def created_at(self) -> float:
        """When the event happened (its ``created_at``, naive = UTC), else when it arrived."""
        raw = self.payload.get("created_at") if isinstance(self.payload, dict) else None
        try:
            at = datetime.fromisoformat(str(raw))
        except ValueError:
            return self.received_at
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()

    def ordering_key(self, spec: HandlerSpec) -> str | None:
        """The handler's ordering key for this event; a payload our models refuse has none
        (its pair is dead-lettered when it runs, and must not hold others)."""
        try:
            return spec.order_key(self.payload, self.event)
        except PermanentError:
            return None


@dataclass
class _Job:
    """One claimed pair, ready to run."""

    ref: PairRef
    spec: HandlerSpec
    delivery: _Delivery
    attempt: int
    parent: Any = None  # the trace context of its claim (uphooks/tracing.py), when tracing
    first_trace: str = ""  # the first attempt's span (traceparent), for a retry's link

    @property
    def pair(self) -> tuple[str, str]:
        return self.ref[0], self.ref[1]


@dataclass
class _Outcome:
    """What one claimed pair came to."""

    ref: PairRef
    kind: str  # done | retry | dead | release
    attempt: int
    delivery: _Delivery | None = None
    error: str = ""
    traceback: str = ""
    due: float = 0.0
    trace: str = ""  # the first attempt's span, kept so later attempts link to it

    def settlement(self, now: float) -> Settlement:
        details: dict[str, Any] = {"attempt": self.attempt, "at": now}
        if self.error:
            details["error"] = self.error
        if self.trace:
            details["trace"] = self.trace
        extra: bytes | str | float = ""
        if self.kind == "retry":
            details["next_at"] = self.due
            extra = self.due
        elif self.kind == "dead":
            extra = orjson.dumps(asdict(self.dead_letter(now)))
        return Settlement(self.ref, self.kind, orjson.dumps(details), extra)

    def dead_letter(self, now: float) -> DeadLetter:
        d = self.delivery
        return DeadLetter(
            key=self.ref[0],
            handler=self.ref[1],
            event=d.event_name if d else "?",
            attempts=self.attempt,
            error=self.error,
            traceback=self.traceback,
            first_received_at=(d.received_at or now) if d else now,
            dead_at=now,
            record=d.raw if d else "{}",
        )


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
        self._publish = with_redis_retries(publish)
        self._soft_limit_exc = soft_limit_exc
        self.ledger = Ledger(client, settings)
        self._keys = self.ledger.keys
        self._policy = RetryPolicy(settings)
        self._leases = LeaseKeeper(self.ledger, settings.lease_seconds)
        self._scheduler = Scheduler(client, settings)
        self._settle = with_redis_retries(self.ledger.settle)
        tracing.setup(settings, "worker")

    def process(
        self,
        task_id: str,
        keys: list[str],
        pairs: list[PairRef] | None = None,
        queue: str | None = None,
    ) -> None:
        """Handle one message; ``queue`` is the queue it came from (None: UPHOOKS_QUEUE)."""
        holder = holder_token(task_id)
        if pairs:
            self._run_pairs(task_id, [(str(k), str(h), str(t)) for k, h, t in pairs], holder)
        else:
            self._route(task_id, keys, queue or self._s.queue, holder)

    # -- 1. read ---------------------------------------------------------------------------
    def _read(self, task_id: str, keys: list[str]) -> tuple[int, dict[str, bytes]]:
        counter = self._keys.deliveries_of(task_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, 2 * self._s.visibility_timeout_seconds)
        pipe.mget([self._keys.delivery(k) for k in keys])
        seen, _, raws = pipe.execute()
        found = {k: raw for k, raw in zip(keys, raws, strict=True) if raw is not None}
        for key in keys:
            if key not in found:
                log.error(
                    "[%s] the stored delivery is gone (older than UPHOOKS_DEDUP_TTL_SECONDS?); "
                    "nothing to process",
                    key,
                )
        return int(seen), found

    # -- 2. route and admit, or claim --------------------------------------------------------
    def _route(self, task_id: str, keys: list[str], here: str, holder: str) -> None:
        seen, raws = self._read(task_id, keys)
        if seen > self._s.poison_max_deliveries and len(keys) > 1:
            log.error(
                "message %s died in its worker %d times; splitting its %d deliveries apart",
                task_id,
                seen - 1,
                len(keys),
            )
            for key in keys:
                self._publish([key])
            return
        deliveries: list[_Delivery] = []
        routes: list[tuple[str, list[Route]]] = []
        specs: list[list[HandlerSpec]] = []
        for key, raw in raws.items():
            try:
                if seen > self._s.poison_max_deliveries:
                    raise RuntimeError(
                        f"the worker process died {seen - 1} times while routing this delivery "
                        f"(limit UPHOOKS_POISON_MAX_DELIVERIES={self._s.poison_max_deliveries})"
                    )
                delivery = _Delivery.parse(key, raw)
                wanted = self._router.handlers_for(delivery.event_name, delivery.payload)
                orders = [delivery.ordering_key(s) for s in wanted]
            except Exception as exc:
                # A record we cannot read would fail on every redelivery: keep it for a human.
                self._dead_routing(key, raw, seen, exc)
                continue
            default = self._s.queue
            deliveries.append(delivery)
            specs.append(wanted)
            member = order_member(
                key,
                delivery.created_at,
                (delivery.received_at or time.time()) + self._s.order_window_seconds,
            )
            routes.append(
                (
                    key,
                    [
                        Route(
                            s.name,
                            s.queue if (s.queue or default) != default else None,
                            here != default or (s.queue or default) == here,
                            order_set(self._keys, s.name, order) if order else "",
                            member if order else "",
                        )
                        for s, order in zip(wanted, orders, strict=True)
                    ],
                )
            )
        started = time.time_ns()
        flags = with_redis_retries(self.ledger.admit)(routes, holder)
        admitted = time.time_ns()
        jobs: list[_Job] = []
        handed_on = False
        copies: list[_Delivery] = []
        for delivery, wanted, row in zip(deliveries, specs, flags, strict=True):
            if row[:1] == [-1]:
                copies.append(delivery)  # a copy of a message already routed
                continue
            parent = None
            if tracing.ON and 1 in row:
                parent = tracing.claimed(
                    delivery.record, {"uphooks.delivery_key": delivery.key}, started, admitted
                )
            for spec, flag in zip(wanted, row, strict=True):
                if flag == 1:
                    job = _Job((delivery.key, spec.name, "1.1"), spec, delivery, 1, parent)
                    jobs.append(job)
                else:
                    handed_on = True
        if handed_on:
            self._scheduler.move_due()  # hand-offs go out now, not at the next scheduler pass
        if copies:
            # Redelivered, typically because the pool process running it died: its running
            # pairs whose holder is gone from this host are taken over now, not a lease later.
            running = self.ledger.running_pairs([d.key for d in copies])
            local = [ref for ref in running if self._router.get(ref[1]) is not None]
            if local:
                self._claim_and_run(local, {d.key: d for d in copies}, holder, jobs)
                return
        self._execute(jobs, holder, [])

    def _run_pairs(self, task_id: str, refs: list[PairRef], holder: str) -> None:
        _, raws = self._read(task_id, sorted({k for k, _, _ in refs}))
        deliveries = {}
        for key, raw in raws.items():
            try:
                deliveries[key] = _Delivery.parse(key, raw)
            except Exception as exc:
                self._dead_routing(key, raw, 1, exc)
        self._claim_and_run(refs, deliveries, holder, [])

    def _claim_and_run(
        self,
        refs: list[PairRef],
        deliveries: dict[str, _Delivery],
        holder: str,
        jobs: list[_Job],
    ) -> None:
        outcomes: list[_Outcome] = []
        started = time.time_ns()
        claims = self.ledger.claim(refs, holder)
        claimed = time.time_ns()
        parents: dict[str, Any] = {}
        for ref, claim in zip(refs, claims, strict=True):
            if claim.state is Claim.BUSY and holder_is_dead_here(claim.holder):
                claim = self.ledger.take_over(ref, claim.holder, holder)
            if claim.state not in (Claim.MINE, Claim.POISON):
                continue
            key, name, _ = ref
            delivery = deliveries.get(key)
            spec = self._router.get(name)
            if claim.state is Claim.POISON:
                error = (
                    f"the worker process died {claim.attempt} times while running this handler "
                    f"(limit UPHOOKS_POISON_MAX_DELIVERIES={self._s.poison_max_deliveries})"
                )
                outcomes.append(_Outcome(ref, "dead", claim.attempt, delivery, error))
            elif spec is None or delivery is None:
                error = (
                    f"handler {name!r} is not registered in this worker; is its module in "
                    "UPHOOKS_HANDLER_MODULES? Replay the dead letter once it is."
                    if spec is None
                    else "the stored delivery is gone"
                )
                log.error("[%s %s] %s", key, name, error)
                outcomes.append(_Outcome(ref, "dead", claim.attempt, delivery, error))
            else:
                job = _Job(ref, spec, delivery, claim.attempt)
                if tracing.ON:
                    if key not in parents:
                        attributes = {"uphooks.delivery_key": key}
                        parents[key] = tracing.claimed(
                            delivery.record, attributes, started, claimed
                        )
                    job.parent = parents[key]
                    job.first_trace = _first_trace(claim.details)
                jobs.append(job)
        self._execute(jobs, holder, outcomes)

    # -- 3. run --------------------------------------------------------------------------
    def _execute(self, jobs: list[_Job], holder: str, outcomes: list[_Outcome]) -> None:
        """Run the jobs; settle what is finished at least every ``SETTLE_EVERY`` seconds, so a
        process killed mid-message repeats at most that much work (fast handlers still share
        one settle call per message)."""
        self._leases.hold(holder, (job.pair for job in jobs))
        try:
            last = time.monotonic()
            for index, job in enumerate(jobs):
                try:
                    self._run(job)
                except self._soft_limit_exc as exc:
                    outcomes.append(self._failed(job, exc))
                    outcomes += [
                        _Outcome(rest.ref, "release", rest.attempt) for rest in jobs[index + 1 :]
                    ]
                    break
                except Exception as exc:
                    outcomes.append(self._failed(job, exc))
                else:
                    outcomes.append(_Outcome(job.ref, "done", job.attempt, job.delivery))
                if time.monotonic() - last >= SETTLE_EVERY and index + 1 < len(jobs):
                    self._finish(outcomes, holder)
                    outcomes = []
                    last = time.monotonic()
            self._finish(outcomes, holder)
        finally:
            self._leases.release(holder)

    # -- 4. decide and settle -------------------------------------------------------------
    def _failed(self, job: _Job, exc: BaseException) -> _Outcome:
        decision = self._policy.decide(job.spec, job.attempt, exc)
        if isinstance(decision, Dead):
            return _Outcome(
                job.ref, "dead", job.attempt, job.delivery, repr(exc), traceback.format_exc()
            )
        log.warning(
            "[%s %s] attempt %d failed, retrying in %.0fs: %r",
            job.ref[0],
            job.ref[1],
            job.attempt,
            decision.due - time.time(),
            exc,
        )
        return _Outcome(
            job.ref,
            "retry",
            job.attempt,
            job.delivery,
            repr(exc),
            due=decision.due,
            trace=job.first_trace,
        )

    def _finish(self, outcomes: list[_Outcome], holder: str) -> None:
        if not outcomes:
            return
        # No longer renewed from here on: a renewal racing this settle must not read as a loss.
        self._leases.release(holder, [(o.ref[0], o.ref[1]) for o in outcomes])
        now = time.time()
        results = self._settle([o.settlement(now) for o in outcomes], holder)
        counted: dict[str, list[str]] = {"done": [], "retry": [], "dead": []}
        for outcome, result in zip(outcomes, results, strict=True):
            key, name, _ = outcome.ref
            if result != "ok":
                log.warning(
                    "[%s %s] outcome %s not recorded: %s",
                    key,
                    name,
                    outcome.kind,
                    "another run holds the pair now (our lease ran out)"
                    if result == "lost"
                    else "the pair had moved on (settled or a newer token)",
                )
                continue
            if outcome.kind in counted:
                counted[outcome.kind].append(name)
            if outcome.kind == "dead":
                log.error(
                    "[%s %s] dead-lettered after %d attempt(s): %s",
                    key,
                    name,
                    outcome.attempt,
                    outcome.error,
                )
        metrics.handler_outcomes(
            done=counted["done"], retried=counted["retry"], dead=counted["dead"]
        )
        if any(self._ordered(name) for name in counted["done"] + counted["dead"]):
            # Settling promoted the next pair of its ordering key: publish it now, not at the
            # next scheduler pass (a key's events would otherwise go one per pass).
            with_redis_retries(self._scheduler.move_due)()

    def _ordered(self, name: str) -> bool:
        spec = self._router.get(name)
        return spec is not None and spec.ordered_by is not None

    # -- helpers -------------------------------------------------------------------------
    def _dead_routing(self, key: str, raw: bytes, attempts: int, exc: BaseException) -> None:
        """Dead-letter a delivery that cannot be routed, and mark it routed so no copy of its
        message tries again; replaying the dead letter routes it afresh."""
        now = time.time()
        log.error("[%s] could not be routed, dead-lettered: %r", key, exc)
        dl = DeadLetter(
            key=key,
            handler=ROUTING_HANDLER,
            event="?",
            attempts=attempts,
            error=repr(exc),
            traceback="".join(traceback.format_exception(exc)),
            first_received_at=now,
            dead_at=now,
            record=raw.decode(errors="replace"),
        )
        eid = dl.entry_id
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self._keys.handled(key), "~", "unroutable")
        pipe.expire(self._keys.handled(key), self._s.dedup_ttl_seconds)
        pipe.zrem(self._keys.due, f"{key}|")
        pipe.set(
            self._keys.dlq_entry(eid), orjson.dumps(asdict(dl)), ex=self._s.dlq_retention_seconds
        )
        pipe.zadd(self._keys.dlq_index, {eid: now})
        with_redis_retries(pipe.execute)()
        metrics.handler_outcomes(dead=[ROUTING_HANDLER])

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
                self._dead_routing(key, raw or b"{}", seen, exc)
        except Exception:
            log.exception("message %s not dead-lettered; it goes back to the queue", task_id)
            return False
        return True

    def _run(self, job: _Job) -> None:
        key, name, _ = job.ref
        event = job.delivery.event()
        record = job.delivery.record
        ctx = Context(
            idempotency_key=f"{key}:{name}",
            delivery_key=key,
            handler_name=name,
            attempt=job.attempt,
            event_name=job.delivery.event_name,
            received_at=job.delivery.received_at,
            headers=record.get("headers") or {},
            log=bound_logger(key, name),
            body=record.get("body") or "",
            source=record.get("source") or "webhook",
        )
        attributes: dict[str, str | int] = {
            "uphooks.delivery_key": key,
            "uphooks.handler": name,
            "uphooks.attempt": job.attempt,
        }
        with (
            tracing.handler_span(job.parent, attributes, job.first_trace) as this_span,
            metrics.handler_call(name) as timer,
        ):
            job.first_trace = job.first_trace or this_span
            if job.spec.time_limit is None:
                job.spec.func(event, ctx)
            else:
                with time_limit(job.spec.time_limit, name):
                    job.spec.func(event, ctx)
        log.info(
            "[%s %s] done in %.0f ms (attempt %d)", key, name, timer.seconds * 1000, job.attempt
        )


def _first_trace(details: str) -> str:
    """The first attempt's span, from the last outcome's details (see ``_Outcome.trace``)."""
    if not details:
        return ""
    try:
        value = orjson.loads(details).get("trace")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
