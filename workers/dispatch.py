"""One Celery message in: its pairs admitted, claimed, run and settled through the ledger.

The steps, each decided in a module of its own:

1. **Intake** (workers/intake.py): count this delivery of the message (a route message's first
   delivery is counted by its admit call instead), take the route messages queued behind it
   while handlers are fast (consume-side batching), and read the stored deliveries, in one
   round trip. A route message whose worker died too often while routing is
   poison: split into one message per delivery, then dead-lettered.
2. **Route** a route message's deliveries to their handlers (handlers/registry.py) and **admit**
   them into the ledger (workers/ledger.py): the first copy creates the pairs and claims those
   this queue runs; pairs of a handler with its own queue are scheduled for that queue. A pair
   message's pairs are **claimed** with their token instead. Either way only pairs this run now
   owns are run; everything else is a no-op.
3. **Run** the claimed pairs (workers/running.py), each under its handler's time limit, their
   leases renewed meanwhile (workers/leases.py). Before that, pairs over their rate limit are
   given back until their slot, and those of async handlers are started on the process's event
   loop and settled from there (workers/off_slot.py): the message does not wait for them.
4. **Decide** each failure and **settle** all outcomes in one call (workers/settling.py): done
   markers, the next attempt scheduled in Redis, dead letters.

Celery acknowledges the message after that. If Redis fails on the way, the message goes back to
the queue; the ledger makes the second pass skip what the first one finished, and a run whose
settle never happened is found by its lapsed lease.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson
import redis

from handlers.registry import HandlerSpec, Router
from uphooks import tracing
from uphooks.settings import Settings
from uphooks.taskmessage import PairRef
from workers import metrics
from workers.deadletter import ROUTING_HANDLER, DeadLetter
from workers.delivery import Delivery
from workers.indexes import INDEX_SYNC
from workers.intake import Intake, Intaker
from workers.leases import LeaseKeeper, holder_is_dead_here, holder_token
from workers.ledger import Claim, Ledger, Route, order_member, order_set
from workers.off_slot import OffSlot
from workers.retrying import RetryPolicy, with_redis_retries
from workers.running import Job, run_job
from workers.schedule import Scheduler
from workers.settling import Outcome, Settler, failed
from workers.time_limits import SoftTimeLimit

log = logging.getLogger("uphooks.worker")

#: Settle finished pairs at least this often within one message (seconds).
SETTLE_EVERY = 0.05

#: publish(keys): a route message on UPHOOKS_QUEUE (used to split a poison message).
Publish = Callable[[list[str]], None]


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
        self._intake = Intaker(client, settings)
        self._settler = Settler(self.ledger.settle, self._leases, router, self._scheduler.move_due)
        # Rate limits, async handlers and UPHOOKS_SYNC_THREADS (workers/off_slot.py).
        self._off_slot = OffSlot(
            client, settings, self._leases, self._policy, self._settler.finish, soft_limit_exc
        )
        tracing.setup(settings, "worker")

    def process(
        self,
        task_id: str,
        keys: list[str],
        pairs: list[PairRef] | None = None,
        queue: str | None = None,
        redelivered: bool = True,
    ) -> None:
        """Handle one message; ``queue`` is the queue it came from (None: UPHOOKS_QUEUE);
        ``redelivered``: the broker handed it out before (kombu marks a restored message).
        A route message's first delivery is counted by its admit call, not before routing."""
        holder = holder_token(task_id)
        here = queue or self._s.queue
        if pairs:
            refs = [(str(k), str(h), str(t)) for k, h, t in pairs]
            intake = self._intake.take(task_id, sorted({k for k, _, _ in refs}), here, False)
            self._run_pairs(refs, intake, holder)
        else:
            room = self._off_slot.wait_for_room()
            intake = self._intake.take(task_id, keys, here, True, redelivered, room)
            count = "" if redelivered else self._keys.deliveries_of(task_id)
            self._route(task_id, intake, here, holder, count)

    # -- 2. route and admit, or claim --------------------------------------------------------
    def _route(self, task_id: str, intake: Intake, here: str, holder: str, count: str) -> None:
        seen, keys = intake.seen, intake.keys
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
        deliveries: list[Delivery] = []
        routes: list[tuple[str, list[Route]]] = []
        specs: list[list[HandlerSpec]] = []
        for key in keys:
            raw = intake.records.get(key)
            if raw is None:
                continue
            try:
                if seen > self._s.poison_max_deliveries:
                    raise RuntimeError(
                        f"the worker process died {seen - 1} times while routing this delivery "
                        f"(limit UPHOOKS_POISON_MAX_DELIVERIES={self._s.poison_max_deliveries})"
                    )
                delivery = Delivery.parse(key, raw)
                wanted = self._router.handlers_for(delivery.event_name, delivery.payload)
                orders = [delivery.ordering_key(s) for s in wanted]
            except Exception as exc:
                # A record we cannot read would fail on every redelivery: keep it for a human.
                self._dead_routing(key, raw, seen, exc)
                continue
            deliveries.append(delivery)
            specs.append(wanted)
            routes.append((key, self._routes(delivery, wanted, orders, here)))
        started = time.time_ns()
        flags = with_redis_retries(self.ledger.admit)(routes, holder, count)
        admitted = time.time_ns()
        jobs: list[Job] = []
        handed_on = False
        copies: list[Delivery] = []
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
                    job = Job((delivery.key, spec.name, "1.1"), spec, delivery, 1, parent)
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

    def _routes(
        self, delivery: Delivery, wanted: list[HandlerSpec], orders: list[str | None], here: str
    ) -> list[Route]:
        """The pairs of one delivery as admit.lua takes them: where each runs, its order."""
        default = self._s.queue
        member = ""
        if any(orders):  # the member (created_at parsed, both times formatted) only if ordered
            member = order_member(
                delivery.key,
                delivery.created_at,
                (delivery.received_at or time.time()) + self._s.order_window_seconds,
            )
        return [
            Route(
                s.name,
                s.queue if (s.queue or default) != default else None,
                here != default or (s.queue or default) == here,
                order_set(self._keys, s.name, order) if order else "",
                member if order else "",
            )
            for s, order in zip(wanted, orders, strict=True)
        ]

    def _run_pairs(self, refs: list[PairRef], intake: Intake, holder: str) -> None:
        deliveries = {}
        for key, raw in intake.records.items():
            try:
                deliveries[key] = Delivery.parse(key, raw)
            except Exception as exc:
                self._dead_routing(key, raw, 1, exc)
        self._claim_and_run(refs, deliveries, holder, [])

    def _claim_and_run(
        self,
        refs: list[PairRef],
        deliveries: dict[str, Delivery],
        holder: str,
        jobs: list[Job],
    ) -> None:
        outcomes: list[Outcome] = []
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
                outcomes.append(Outcome(ref, "dead", claim.attempt, delivery, error))
            elif spec is None or delivery is None:
                error = (
                    f"handler {name!r} is not registered in this worker; is its module in "
                    "UPHOOKS_HANDLER_MODULES? Replay the dead letter once it is."
                    if spec is None
                    else "the stored delivery is gone"
                )
                log.error("%s", error, extra={"delivery_key": key, "handler": name})
                outcomes.append(Outcome(ref, "dead", claim.attempt, delivery, error))
            else:
                job = Job(ref, spec, delivery, claim.attempt)
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

    # -- 3. run, 4. settle ---------------------------------------------------------------
    def _execute(self, jobs: list[Job], holder: str, outcomes: list[Outcome]) -> None:
        """Run the jobs; settle what is finished at least every ``SETTLE_EVERY`` seconds, so a
        process killed mid-message repeats at most that much work (fast handlers still share
        one settle call per message). Pairs over their rate limit are given back first, and
        those of async handlers started on the process's loop, not waited for."""
        # Runs started off the slot cost it ~0: batch sizing counts their deliveries too.
        routed = len({job.ref[0] for job in jobs})
        jobs = self._off_slot.hold_back_over_rate(jobs, outcomes)
        jobs = self._off_slot.start_async(jobs, holder, outcomes)
        # -- the sync handlers, in this slot ----------------------------------------------
        self._leases.hold(holder, (job.pair for job in jobs))
        try:
            last = began = time.monotonic()
            for index, job in enumerate(jobs):
                started = time.monotonic()
                try:
                    run_job(job)
                except self._soft_limit_exc as exc:
                    outcomes.append(failed(self._policy, job, exc, time.monotonic() - started))
                    outcomes += [
                        Outcome(rest.ref, "release", rest.attempt) for rest in jobs[index + 1 :]
                    ]
                    break
                except Exception as exc:
                    outcomes.append(failed(self._policy, job, exc, time.monotonic() - started))
                else:
                    took = time.monotonic() - started
                    outcomes.append(
                        Outcome(job.ref, "done", job.attempt, job.delivery, duration=took)
                    )
                if time.monotonic() - last >= SETTLE_EVERY and index + 1 < len(jobs):
                    self._settler.finish(outcomes, holder)
                    outcomes = []
                    last = time.monotonic()
            ran = time.monotonic() - began
            self._settler.finish(outcomes, holder)
            self._intake.size.observe(ran, routed)
        finally:
            self._leases.release(holder, [job.pair for job in jobs])  # async runs keep theirs

    # -- deliveries that cannot be routed ------------------------------------------------
    def _dead_routing(self, key: str, raw: bytes, attempts: int, exc: BaseException) -> None:
        """Dead-letter a delivery that cannot be routed, and mark it routed so no copy of its
        message tries again; replaying the dead letter routes it afresh."""
        now = time.time()
        log.error("could not be routed, dead-lettered: %r", exc, extra={"delivery_key": key})
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

        def write() -> None:
            # Built anew for each attempt: a pipeline empties itself when execute() fails, so
            # retrying execute() alone would send nothing and lose the dead letter.
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._keys.handled(key), "~", "unroutable")
            pipe.expire(self._keys.handled(key), self._s.dedup_ttl_seconds)
            pipe.zrem(self._keys.due, f"{key}|")
            pipe.eval(INDEX_SYNC, 0, self._keys.prefix, key)  # the console shows it dead
            pipe.set(
                self._keys.dlq_entry(eid),
                orjson.dumps(asdict(dl)),
                ex=self._s.dlq_retention_seconds,
            )
            pipe.zadd(self._keys.dlq_index, {eid: now})
            pipe.execute()

        with_redis_retries(write)()
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


def _first_trace(details: str) -> str:
    """The first attempt's span, from the last outcome's details (see ``Outcome.trace``)."""
    if not details:
        return ""
    try:
        value = orjson.loads(details).get("trace")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
