"""``async def`` handlers: many calls in flight per worker process, without a pool slot each.

Why this shape (docs/handlers.md, "Sync or async"): a Celery pool slot held per waiting call is
what makes I/R-bound handlers expensive (one prefork process of ~60 MB per call in flight). So a
message whose claimed pairs belong to async handlers does not wait for them: the task starts each
run on **one event loop per process**, kept in a thread of its own, and returns; Celery
acknowledges the message and the slot takes the next one. Nothing is lost by acknowledging early,
because the message was only a wake-up: each started pair is claimed in the ledger (its lease
renewed by workers/leases.py while it runs, its item in ``due`` until it is settled), so a
process that dies with runs in flight loses nothing: their leases lapse and the scheduler
publishes them again, exactly as for a sync run whose process died.

Bounds: at most ``UPHOOKS_ASYNC_CONCURRENCY`` runs per process (a message whose pairs find the
process full waits for room, in its slot: that is the backpressure) and at most a handler's
``concurrency=`` of one handler. Outcomes are settled in batches from a thread of their own, so
the loop never waits on Redis.

Time limits are ``asyncio.timeout`` (any pool, no signals); retries and idempotency are the
ledger's, unchanged (workers/dispatch.py builds each run's outcome exactly as for sync runs).

With ``UPHOOKS_SYNC_THREADS=N`` plain handlers (those without a per-call ``time_limit``, which
needs the main thread's timer) go the same way, each call on one of N threads of this process
(:class:`SyncPool`), with as many admitted calls queued in front of them: a ``-P solo`` worker
then keeps N sync calls in flight while its one slot goes on taking messages, and a thread that
finishes a call starts the next at once, instead of waiting for its message's settle and the
next message's intake and admit as a thread of Celery's pool does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

from celery import signals

log = logging.getLogger("uphooks.worker")

R = TypeVar("R")

#: How long a worker process that stops waits for its async runs to finish and settle.
DRAIN_SECONDS = 30.0


class SettleQueue(Generic[R]):
    """Collects outcomes (from the loop) and settles them per holder, in batches, on a thread:
    while one settle call is under way the next outcomes gather for the following one."""

    def __init__(self, finish: Callable[[list[R], str], None]) -> None:
        self._finish = finish
        self._pending: dict[str, list[R]] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        _settlers.append(self)

    def add(self, holder: str, outcome: R) -> None:
        with self._cond:
            self._pending.setdefault(holder, []).append(outcome)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="uphooks-settle", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                batch, self._pending = self._pending, {}
                self._busy = True
            for holder, outcomes in batch.items():
                try:
                    self._finish(outcomes, holder)
                except Exception:
                    # Redis stayed away through the retries: the leases lapse and the pairs run
                    # again, once (the ledger fences any late copy).
                    log.exception("%d async outcome(s) not settled", len(outcomes))

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)


class _Admitted:
    """Runs admitted and not finished, at most ``limit``: a start waits for room in its slot
    (the backpressure), and shutdown waits until none is left."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._room = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        _pools.append(self)

    @property
    def running(self) -> int:
        """Runs admitted and not finished (running or queued)."""
        return self._running

    @property
    def room(self) -> int:
        """Runs that may be started now without waiting."""
        return max(0, self._limit - self._running)

    def _admit(self) -> None:
        self._room.acquire()
        with self._lock:
            self._running += 1

    def _finished(self) -> None:
        with self._lock:
            self._running -= 1
            self._idle.notify_all()
        self._room.release()

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: self._running == 0, timeout)


class AsyncPool(_Admitted):
    """One event loop in a thread of this process; runs coroutines within the bounds."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        self._per_handler: dict[str, asyncio.Semaphore] = {}  # touched on the loop only

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=run, name="uphooks-aio", daemon=True).start()
                started.wait()
                self._loop, self._pid, self._per_handler = loop, os.getpid(), {}
            return self._loop

    def start(
        self,
        handler: str,
        concurrency: int | None,
        run: Callable[[], Awaitable[R]],
        done: Callable[[R], None],
    ) -> None:
        """Start ``run()`` on the loop and hand its result to ``done`` (on the loop thread);
        blocks while the process already runs ``limit`` of them."""
        self._admit()
        try:
            loop = self._ensure_loop()
            job = run if concurrency is None else partial(self._bounded, handler, concurrency, run)
            asyncio.run_coroutine_threadsafe(self._one(handler, job, done), loop)
        except BaseException:
            self._finished()
            raise

    async def _bounded(self, handler: str, concurrency: int, run: Callable[[], Awaitable[R]]) -> R:
        """``run()`` while fewer than ``concurrency`` runs of ``handler`` are in progress."""
        bound = self._per_handler.get(handler)
        if bound is None:
            bound = self._per_handler[handler] = asyncio.Semaphore(concurrency)
        async with bound:
            return await run()

    async def _one(
        self, handler: str, run: Callable[[], Awaitable[R]], done: Callable[[R], None]
    ) -> None:
        try:
            done(await run())
        except BaseException:
            # run() turns every handler error into an outcome; this is a bug of ours. The
            # pair's lease lapses and it runs again.
            log.exception("async run of %s failed in the worker", handler)
        finally:
            self._finished()


class SyncPool(_Admitted):
    """``UPHOOKS_SYNC_THREADS``: N threads for plain handlers' calls, and a bounded queue of
    admitted calls in front of them, so a thread that finishes a call starts the next at once
    while the slot admits more. At most ``threads + ahead`` calls are admitted at once (running
    or queued); a start waits for room, in its slot (the backpressure). A call and its
    outcome's hand-over (``done``) run on the thread: no event loop between the slot and the
    threads. (``concurrency=`` is for async handlers only: handlers/registry.py.)"""

    def __init__(self, threads: int, ahead: int | None = None) -> None:
        super().__init__(threads + (threads if ahead is None else ahead))
        self._threads = threads
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pid = 0

    def wait_for_room(self, timeout: float) -> int:
        """Wait (at most ``timeout`` s) until half the queue ahead is free; the room then. A
        slot that waits for this takes several messages at once (consume-side batching) where
        one taken as each call ends would pay a message's whole cost for one delivery."""
        wanted = max(1, (self._limit - self._threads) // 2)
        with self._lock:
            self._idle.wait_for(lambda: self._limit - self._running >= wanted, timeout)
            return max(0, self._limit - self._running)

    def _ensure_threads(self) -> None:
        """Under the lock: the threads of this process (after a fork, new ones)."""
        if self._pid == os.getpid():
            return
        self._queue, self._pid = queue.SimpleQueue(), os.getpid()
        for n in range(self._threads):
            threading.Thread(target=self._work, name=f"uphooks-sync-{n}", daemon=True).start()

    def start(self, handler: str, call: Callable[[], R], done: Callable[[R], None]) -> None:
        """Queue ``call()`` for a thread and hand its result to ``done`` (on that thread);
        blocks while ``threads + ahead`` calls are already admitted."""
        self._admit()
        with self._lock:
            self._ensure_threads()
            self._queue.put(partial(self._one, handler, call, done))

    def _one(self, handler: str, call: Callable[[], R], done: Callable[[R], None]) -> None:
        try:
            done(call())
        except BaseException:
            # call() turns every handler error into an outcome; this is a bug of ours. The
            # pair's lease lapses and it runs again.
            log.exception("sync run of %s failed in the worker", handler)
        finally:
            self._finished()

    def _work(self) -> None:
        while True:
            self._queue.get()()


_pools: list[_Admitted] = []
_settlers: list[SettleQueue[Any]] = []


def drain(timeout: float = DRAIN_SECONDS) -> None:
    """Let this process's async runs finish (and be settled) before it exits."""
    deadline = time.monotonic() + timeout
    for pool in _pools:
        if pool.running and not pool.wait_idle(max(0.0, deadline - time.monotonic())):
            log.warning(
                "%d async run(s) still running at shutdown; their leases lapse and they run "
                "again elsewhere",
                pool.running,
            )
    for settler in _settlers:
        settler.wait_idle(max(0.0, deadline - time.monotonic()))


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _drain_on_shutdown(**_: Any) -> None:
    """Solo and threads pools (tasks in the main process); a prefork child is ended without a
    signal in it, so its calls in flight are found by their leases."""
    drain()
