"""UPHOOKS_SYNC_THREADS (workers/aio.py ``SyncPool``): plain handlers on N threads of the worker
process, with as many admitted calls queued in front of them, keep the ledger's promises.

Real worker processes; runs are counted per (delivery, handler) pair, and each test waits past
the moment a late duplicate would have shown. Retries, dead letters and copies of every message:
tests/test_async_handlers.py (``test_sync_handlers_on_the_loops_threads_keep_exactly_once``).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

from tests.conftest import Stack, wait_for
from tests.test_async_handlers import account_body
from tests.test_batching import took
from tests.test_ledger import LATE, QUIET, post, runs, state
from uphooks.keys import Keys
from workers.aio import SyncPool

THREADED = "tests.plugins.threaded"


def test_the_pool_runs_n_calls_with_n_more_queued_and_a_start_beyond_waits() -> None:
    """SyncPool(2): 2 calls run, 2 wait queued, a fifth start blocks until a call ends; every
    result reaches ``done``; room counts what may start without waiting."""
    pool = SyncPool(2)
    gate = threading.Event()
    lock = threading.Lock()
    running, most, results = [0], [0], []

    def call(n: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        gate.wait(10)
        with lock:
            running[0] -= 1
        return n

    def done(n: int) -> None:
        with lock:
            results.append(n)

    for n in range(4):
        pool.start("h", functools.partial(call, n), done)
    assert pool.room == 0 and pool.running == 4
    fifth = threading.Thread(target=pool.start, args=("h", functools.partial(call, 4), done))
    fifth.start()
    time.sleep(0.3)
    assert fifth.is_alive()  # no room: the start waits, as a slot would
    assert most[0] == 2  # two threads
    assert pool.wait_for_room(0.1) == 0  # half the queue is not free yet
    gate.set()
    fifth.join(5)
    assert pool.wait_idle(5)
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert most[0] == 2
    assert pool.room == 4 and pool.wait_for_room(0.1) == 4


def test_sync_calls_run_on_n_threads_fed_by_batches_each_pair_once(stack: Stack) -> None:
    """30 deliveries waiting before the worker starts, each for two handlers of 0.3 s: one
    -P solo process with UPHOOKS_SYNC_THREADS=3 takes them in batches, runs 3 calls at once on
    exactly 3 threads, and every pair once."""
    r = stack.client()
    ingress = stack.ingress()
    keys = [post(ingress, account_body("social_account_connected")) for _ in range(30)]
    worker = stack.worker(THREADED, "-P", "solo", UPHOOKS_SYNC_THREADS="3", **QUIET)
    wait_for(
        lambda: all(
            state(stack, k, "threads.wide") == "done" and state(stack, k, "threads.wider") == "done"
            for k in keys
        ),
        timeout=90,
        what="every pair done",
    )
    time.sleep(LATE)
    for key in keys:
        assert runs(stack, "threads.wide", key) == [1], key
        assert runs(stack, "threads.wider", key) == [1], key
    inflight = [int(n) for n in r.lrange(f"{stack.prefix}:test:inflight", 0, -1)]
    assert max(inflight) == 3, inflight  # 60 calls of 0.3 s: the threads were kept busy
    assert len(r.smembers(f"{stack.prefix}:test:threads")) == 3
    assert took(worker.log.read_text()), "no batch was taken"
    assert r.zcard(Keys(stack.prefix).due) == 0


def test_a_process_killed_with_sync_calls_running_and_queued_loses_none(stack: Stack) -> None:
    """UPHOOKS_SYNC_THREADS=2: the victim runs 2 calls and has at most 2 more queued (and one
    message's waiting for room), all acknowledged and claimed; the rest stay in the queue. It is
    killed mid-call: the calls that ran repeat once (a lost run), the queued ones run once, and
    no call finishes twice. A message it had fetched but not routed comes back by its due time
    (docs/design.md, section 7: 8 s here instead of 10 minutes)."""
    r = stack.client()
    r.set(f"{stack.prefix}:test:ctl:long_seconds", 4)
    recover = {"UPHOOKS_RECOVER_AFTER_SECONDS": "8"}
    ingress = stack.ingress(**recover)
    victim = stack.worker(THREADED, "-P", "solo", UPHOOKS_SYNC_THREADS="2", **recover, **QUIET)
    keys = [post(ingress, account_body("social_account_disconnected")) for _ in range(10)]
    pid = victim.proc.pid

    def started_in_victim() -> list[str]:
        return [
            k
            for k in keys
            if str(pid).encode() in r.lrange(f"{stack.prefix}:test:started:{k}", 0, -1)
        ]

    def claimed() -> list[str]:
        return [k for k in keys if state(stack, k, "threads.long") == "running"]

    wait_for(
        lambda: len(started_in_victim()) == 2 and len(claimed()) >= 4,
        what="2 calls running in the victim, more queued",
    )
    held = claimed()
    ran = started_in_victim()
    os.killpg(pid, signal.SIGKILL)
    victim.proc.wait()
    assert len(ran) == 2, ran  # two threads: no third call started
    assert 4 <= len(held) <= 5, held  # 2 running + 2 queued (+ 1 waiting for room)
    stack.worker(THREADED, "-P", "solo", UPHOOKS_SYNC_THREADS="4", **recover, **QUIET)
    wait_for(
        lambda: all(state(stack, k, "threads.long") == "done" for k in keys),
        timeout=90,
        what="every pair done after the kill",
    )
    time.sleep(LATE)
    for key in keys:
        finished = r.lrange(f"{stack.prefix}:test:finished:{key}", 0, -1)
        assert finished and str(pid).encode() not in finished, key  # killed mid-run
        assert len(finished) == 1, key
        assert runs(stack, "threads.long", key) == ([1, 1] if key in ran else [1]), key
        assert r.hget(Keys(stack.prefix).handled(key), "threads.long!") is None
    assert r.zcard(Keys(stack.prefix).due) == 0
