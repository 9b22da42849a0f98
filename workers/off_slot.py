"""Claimed pairs that do not run in the message's pool slot.

Two kinds, decided here before the slot runs the rest (workers/dispatch.py, step 3):

* pairs of a rate-limited handler over its limit (workers/rate_limits.py): given back to the
  ledger, due at the slot their buckets gave them (``release`` with a due time; no attempt
  counted);
* pairs of ``async def`` handlers, started on the process's event loop, and with
  ``UPHOOKS_SYNC_THREADS`` sync ones without a per-call time limit, queued for the process's
  sync threads (workers/aio.py); each is settled from there when it ends. The message does not
  wait for them, so the task returns once they started (every route message a batch took
  included: workers/intake.py). :meth:`OffSlot.wait_for_room` says how many more can start
  without waiting, so a batch takes no more than that.

Their outcomes are built exactly as for runs in the slot (workers/settling.py) and settled by the
same ``Settler.finish``, batched by a settle thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import redis

from uphooks import tracing
from uphooks.settings import Settings
from workers import metrics
from workers.aio import AsyncPool, SettleQueue, SyncPool
from workers.leases import LeaseKeeper
from workers.rate_limits import RateLimits
from workers.retrying import RetryPolicy, with_redis_retries
from workers.running import Job, attributes_of, context_of, run_job
from workers.settling import Outcome, failed
from workers.time_limits import HandlerTimeLimit

log = logging.getLogger("uphooks.worker")

#: How long the slot waits for the sync threads' queue to half empty before taking a message.
ROOM_WAIT = 1.0


class OffSlot:
    """One per process (with its Dispatcher): the rate limits, the event loop, the settle
    thread."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        leases: LeaseKeeper,
        policy: RetryPolicy,
        finish: Callable[[list[Outcome], str], None],
        soft_limit_exc: type[BaseException],
    ) -> None:
        self._s = settings
        self._leases = leases
        self._policy = policy
        self._soft_limit_exc = soft_limit_exc
        self._rates = RateLimits(client, settings)
        self._aio = AsyncPool(settings.async_concurrency)
        self._threads = SyncPool(settings.sync_threads) if settings.sync_threads else None
        self._settle_queue: SettleQueue[Outcome] = SettleQueue(finish)

    def wait_for_room(self) -> int:
        """Runs this process can start off the slot without waiting (a batch's cap). With
        UPHOOKS_SYNC_THREADS, first waits (up to ``ROOM_WAIT`` s) until half the calls queued
        ahead of the threads have started, so the slot takes route messages in batches."""
        if self._threads is None:
            return self._aio.room
        return min(self._aio.room, self._threads.wait_for_room(ROOM_WAIT))

    def hold_back_over_rate(self, jobs: list[Job], outcomes: list[Outcome]) -> list[Job]:
        """Jobs of rate-limited handlers over their limit are given back to the ledger, due
        when their slot comes (no attempt counted); returns the jobs that may run now."""
        limited = [job for job in jobs if job.spec.rate]
        if not limited:
            return jobs
        asked = [(job.ref[0], job.ref[1], job.spec.rate) for job in limited]
        waits = with_redis_retries(self._rates.waits)(asked)  # one call for the whole batch
        now = time.time()
        later = set()
        for job, wait in zip(limited, waits, strict=True):
            if wait > 0:
                later.add(id(job))
                outcomes.append(Outcome(job.ref, "release", job.attempt, due=now + wait))
        return [job for job in jobs if id(job) not in later]

    def start_async(self, jobs: list[Job], holder: str, outcomes: list[Outcome]) -> list[Job]:
        """Start the off-slot jobs on this process's event loop, each settled from there when
        it ends; returns the jobs left for the slot. A start waits while the process is full;
        if the message's soft time limit comes first, the jobs not started (and the slot's)
        are given back, as in the slot."""
        started = [job for job in jobs if self._off_slot(job)]
        if not started:
            return jobs
        rest = [job for job in jobs if not self._off_slot(job)]
        self._leases.hold(holder, (job.pair for job in started))
        settle = functools.partial(self._settle_queue.add, holder)
        for index, job in enumerate(started):
            try:
                spec = job.spec
                if spec.is_async:
                    run = functools.partial(self._run_async, job)
                    self._aio.start(spec.name, spec.concurrency, run, settle)
                else:
                    assert self._threads is not None  # _off_slot: UPHOOKS_SYNC_THREADS is on
                    call = functools.partial(self._run_sync, job)
                    self._threads.start(spec.name, call, settle)
            except self._soft_limit_exc:
                unstarted = started[index:]
                self._leases.release(holder, [j.pair for j in unstarted])
                outcomes += [Outcome(j.ref, "release", j.attempt) for j in unstarted + rest]
                return []
        return rest

    def _off_slot(self, job: Job) -> bool:
        """Run off the slot: async handlers on the process's loop, and with
        UPHOOKS_SYNC_THREADS sync ones that need no per-call timer on its threads
        (workers/aio.py)."""
        spec = job.spec
        return spec.is_async or (self._s.sync_threads > 0 and spec.time_limit is None)

    def _run_sync(self, job: Job) -> Outcome:
        """One sync run on a thread of UPHOOKS_SYNC_THREADS: its outcome, as in the slot."""
        started = time.monotonic()
        try:
            run_job(job)
        except Exception as exc:
            return failed(self._policy, job, exc, time.monotonic() - started)
        took = time.monotonic() - started
        return Outcome(job.ref, "done", job.attempt, job.delivery, duration=took)

    async def _run_async(self, job: Job) -> Outcome:
        """One async run on the loop: its outcome, as for runs in the slot. Its time limit
        (its own, else the task's soft limit) is ``asyncio.timeout``."""
        key, name, _ = job.ref
        limit = job.spec.time_limit or float(self._s.task_soft_time_limit_seconds)
        started = time.monotonic()
        try:
            event = job.delivery.event()
            ctx = context_of(job)
            with (
                tracing.handler_span(job.parent, attributes_of(job), job.first_trace) as span,
                metrics.handler_call(name) as timer,
            ):
                job.first_trace = job.first_trace or span
                within = asyncio.timeout(limit)
                try:
                    async with within:
                        await job.spec.func(event, ctx)  # type: ignore[misc]
                except TimeoutError as exc:
                    if not within.expired():
                        raise  # the handler's own
                    raise HandlerTimeLimit(
                        f"handler {name!r} ran past its time limit of {limit:g}s"
                    ) from exc
        except asyncio.CancelledError:
            return Outcome(job.ref, "release", job.attempt)  # the loop is stopping: not run
        except Exception as exc:
            return failed(self._policy, job, exc, time.monotonic() - started)
        log.info(
            "done in %.0f ms (attempt %d)",
            timer.seconds * 1000,
            job.attempt,
            extra={"delivery_key": key, "handler": name},
        )
        took = time.monotonic() - started
        return Outcome(job.ref, "done", job.attempt, job.delivery, duration=took)
