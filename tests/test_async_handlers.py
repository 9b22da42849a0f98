"""``async def`` handlers (workers/aio.py) keep the ledger's promises exactly as sync ones do.

Real worker processes; runs are counted per (delivery, handler) pair, and each test waits past
the moment a late duplicate would have shown.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

from tests.conftest import Stack, fixture_bodies, wait_for
from tests.test_batching import BATCHED, all_ran_once, post_uploads, took
from tests.test_batching import ENV as BATCH_ENV
from tests.test_batching import runs as sync_runs
from tests.test_ledger import LATE, LEDGERED, QUIET, Copier, post, runs, state, upload_body
from uphooks.keys import Keys

AIO = "tests.plugins.aio"


def account_body(event: str) -> bytes:
    body = json.loads(fixture_bodies()[f"{event}.json"])
    body["account_name"] = f"acct-{uuid.uuid4().hex[:12]}"
    return json.dumps(body).encode()


def test_async_runs_are_exactly_once_with_retries_dead_letters_and_time_limits(
    stack: Stack,
) -> None:
    """20 deliveries, every message delivered twice at once and once more late, two workers:
    a steady async handler runs once, a flaky one 3 times (attempts 1-3), a permanent failure
    once (dead), one that hangs past its time limit twice (the limit counts as an attempt)."""
    r = stack.client()
    ingress = stack.ingress()
    keys = [post(ingress, upload_body()) for _ in range(20)]
    with Copier(r, stack.queue).running() as copier:
        stack.worker(AIO, **QUIET)
        stack.worker(AIO, "-P", "solo", **QUIET)

        def settled() -> bool:
            return all(
                state(stack, k, "aio.steady") == "done"
                and state(stack, k, "aio.flaky") == "done"
                and state(stack, k, "aio.broken") == "dead"
                and state(stack, k, "aio.timed") == "done"
                for k in keys
            )

        wait_for(settled, timeout=90, what="every pair settled")
    late = copier.deliver_late()

    assert late > 20 and copier.copied == late
    for key in keys:
        assert runs(stack, "aio.steady", key) == [1], key
        assert runs(stack, "aio.flaky", key) == [1, 2, 3], key
        assert runs(stack, "aio.broken", key) == [1], key
        assert runs(stack, "aio.timed", key) == [1, 2], key
    assert r.zcard(f"{stack.prefix}:dlq") == 20
    entry = json.loads(r.get(f"{stack.prefix}:dlq:{keys[0]}|aio.broken") or b"{}")
    assert "broken on purpose" in entry["error"]
    details = json.loads(r.hget(Keys(stack.prefix).handled(keys[0]), "aio.timed@") or b"{}")
    assert details["attempt"] == 2
    assert r.zcard(Keys(stack.prefix).due) == 0  # nothing left open


def test_async_runs_overlap_within_the_process_and_handler_bounds(stack: Stack) -> None:
    """One worker process (solo pool, one slot) runs many async calls at once, never more than
    UPHOOKS_ASYNC_CONCURRENCY, and never more than a handler's ``concurrency=``."""
    r = stack.client()
    ingress = stack.ingress()
    stack.worker(AIO, "-P", "solo", UPHOOKS_ASYNC_CONCURRENCY="5", **QUIET)
    keys = [post(ingress, account_body("social_account_connected")) for _ in range(30)]
    wait_for(
        lambda: (
            all(state(stack, k, "aio.wide") == "done" for k in keys)
            and all(state(stack, k, "aio.bounded") == "done" for k in keys)
        ),
        timeout=60,
        what="all done",
    )
    time.sleep(LATE)
    for key in keys:
        assert runs(stack, "aio.wide", key) == [1], key
        assert runs(stack, "aio.bounded", key) == [1], key
    wide = [int(n) for n in r.lrange(f"{stack.prefix}:test:inflight:wide", 0, -1)]
    bounded = [int(n) for n in r.lrange(f"{stack.prefix}:test:inflight:bounded", 0, -1)]
    # 30 x 0.3 s each for two handlers in one slot: they overlapped, within the bounds.
    assert 2 < max(wide) <= 5, wide
    assert max(bounded) == 2, bounded


def test_a_process_killed_with_async_runs_in_flight_loses_none_and_repeats_only_those(
    stack: Stack,
) -> None:
    """The message was acknowledged when its runs started; the lease and the schedule bring
    back exactly the runs that were in flight in the killed process, once each."""
    r = stack.client()
    # Long enough for the 12 posts to reach the victim before its first run ends: one at a
    # time, they took over 2 s on a loaded machine.
    r.set(f"{stack.prefix}:test:ctl:long_seconds", 5)
    ingress = stack.ingress()
    victim = stack.worker(AIO, "-P", "solo", **QUIET)
    keys = [post(ingress, account_body("social_account_disconnected")) for _ in range(12)]
    pid = victim.proc.pid

    def started_in_victim() -> list[str]:
        return [
            k
            for k in keys
            if str(pid).encode() in r.lrange(f"{stack.prefix}:test:started:{k}", 0, -1)
        ]

    wait_for(lambda: len(started_in_victim()) == len(keys), what="all started in the victim")
    os.killpg(pid, signal.SIGKILL)
    victim.proc.wait()
    stack.worker(AIO, "-P", "solo", **QUIET)
    wait_for(
        lambda: all(state(stack, k, "aio.long") == "done" for k in keys),
        timeout=60,
        what="every pair done after the kill",
    )
    time.sleep(LATE)
    for key in keys:
        finished = r.lrange(f"{stack.prefix}:test:finished:{key}", 0, -1)
        assert str(pid).encode() not in finished, key  # killed mid-run
        assert len(finished) == 1, key
        assert runs(stack, "aio.long", key) == [1, 1], key  # lost run, then once more
        lost = r.hget(Keys(stack.prefix).handled(key), "aio.long!")
        assert lost is None  # settled done: the lost-run count is cleared
    assert r.zcard(Keys(stack.prefix).due) == 0


def test_an_async_run_longer_than_its_lease_keeps_it_and_runs_once(stack: Stack) -> None:
    """Runs of 6 s under a 4 s lease, two workers: the lease is renewed while the coroutine
    waits, so no other worker takes the pair over."""
    r = stack.client()
    r.set(f"{stack.prefix}:test:ctl:long_seconds", 6)
    ingress = stack.ingress()
    stack.worker(AIO, "-P", "solo", **QUIET)
    stack.worker(AIO, "-P", "solo", **QUIET)
    keys = [post(ingress, account_body("social_account_disconnected")) for _ in range(6)]
    wait_for(
        lambda: all(state(stack, k, "aio.long") == "done" for k in keys),
        timeout=60,
        what="every long run done",
    )
    time.sleep(LATE)
    for key in keys:
        assert runs(stack, "aio.long", key) == [1], key
        assert len(r.lrange(f"{stack.prefix}:test:finished:{key}", 0, -1)) == 1, key


def test_sync_handlers_on_the_loops_threads_keep_exactly_once(stack: Stack) -> None:
    """UPHOOKS_SYNC_THREADS: plain handlers run on the runner's threads, their messages
    acknowledged at the start; with every message copied, each pair still runs exactly as often
    as its attempts (steady once, flaky 1-5, broken once and dead)."""
    r = stack.client()
    r.set(f"{stack.prefix}:test:ctl:ok_at", 5)
    ingress = stack.ingress()
    keys = [post(ingress, upload_body()) for _ in range(12)]
    with Copier(r, stack.queue).running() as copier:
        for _ in range(2):
            stack.worker(LEDGERED, "-P", "solo", UPHOOKS_SYNC_THREADS="4", **QUIET)

        def settled() -> bool:
            return all(
                state(stack, k, "ledger.steady") == "done"
                and state(stack, k, "ledger.flaky") == "done"
                and state(stack, k, "ledger.broken") == "dead"
                for k in keys
            )

        wait_for(settled, timeout=60, what="every pair settled")
    copier.push_late_copies()
    time.sleep(LATE)
    for key in keys:
        assert runs(stack, "ledger.steady", key) == [1], key
        assert runs(stack, "ledger.flaky", key) == [1, 2, 3, 4, 5], key
        assert runs(stack, "ledger.broken", key) == [1], key
    assert r.zcard(Keys(stack.prefix).due) == 0


def test_async_runs_of_a_batch_are_started_and_the_slot_goes_on(stack: Stack) -> None:
    """Consume-side batching (workers/intake.py) with async handlers: one pool slot, 30 route
    messages, a fast sync handler and an async one that waits for a gate. Every sync run
    happens while all the async runs wait, so no message waited for its async runs; those keep
    their leases (renewed past two lease times while the gate is shut: the slot released only
    its sync pairs') and each runs once when the gate opens."""
    r = stack.client()
    ingress = stack.ingress()
    keys, _ = post_uploads(ingress, 30)
    worker = stack.worker(f"{BATCHED},tests.plugins.aio_gated", "-c", "1", **BATCH_ENV)
    wait_for(lambda: all_ran_once(stack, keys), timeout=60, what="every sync pair ran")
    started = [r.lrange(f"{stack.prefix}:test:started:{k}", 0, -1) for k in keys]
    assert started == [[b"1"]] * 30  # every async run started, none finished: the gate is shut
    assert took(worker.log.read_text()), "no batch was taken"
    time.sleep(2 * 4.0)  # two lease times (tests/conftest.py): renewals keep the async pairs
    assert all(state(stack, k, "aio.gated") == "running" for k in keys)
    r.set(f"{stack.prefix}:test:ctl:gate_open", 1)
    wait_for(
        lambda: all(state(stack, k, "aio.gated") == "done" for k in keys),
        timeout=30,
        what="every async pair done",
    )
    time.sleep(LATE)
    for key in keys:
        assert runs(stack, "aio.gated", key) == [1], key
        assert r.lrange(f"{stack.prefix}:test:started:{key}", 0, -1) == [b"1"], key
    assert [sync_runs(stack, k) for k in keys] == [[1]] * 30
    assert r.zcard(Keys(stack.prefix).due) == 0
