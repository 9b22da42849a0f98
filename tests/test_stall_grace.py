"""A Redis stall longer than a lease does not hand finished runs to a second worker (grace.lua).

While Redis is paused nobody can renew a lease or settle a run, so every lease runs out. Before
the grace, the first scheduler pass after the pause published all those runs as lost and another
worker ran them again, though their handlers had finished and their settles were on the way
(`make chaos` 10a: a pair ran twice). Now a pass that comes more than a stall after the one
before starts one lease of grace; runs that settle in it are done once, and only the runs whose
holder never comes back are taken over, after it.

Real Redis (a server of the test's own, paused with SIGSTOP), the real scripts, 2,000 pairs.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import redis

from harness.redis import RedisServer
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.ledger import Claim, Ledger, Route, Settlement
from workers.schedule import Scheduler, stall_seconds

PAIRS = 2000
SETTLED = 1500  # their handlers finished during the pause; the rest's holder is gone
HANDLER = "t.count"


def _stack(server: RedisServer) -> tuple[redis.Redis, Settings, Ledger, Scheduler, list[str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=server.url,
        key_prefix=prefix,
        queue=f"{prefix}-q",
        lease_seconds=1.0,
        schedule_interval_seconds=0.2,
    )
    client = redis.Redis.from_url(server.url)
    keys = [f"k{i}" for i in range(PAIRS)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.set(Keys(prefix).delivery(key), b'{"event":"upload_completed"}', ex=3600)
    pipe.execute()
    ledger = Ledger(client, settings)
    flags = ledger.admit([(key, [Route(HANDLER, None, True)]) for key in keys], "A|1|x")
    assert flags == [[1]] * PAIRS  # every pair claimed by holder A
    return client, settings, ledger, Scheduler(client, settings), keys


def _pause(server: RedisServer, seconds: float) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def _passes(scheduler: Scheduler, settings: Settings, seconds: float) -> int:
    """Scheduler passes every interval for ``seconds``; the runs they found lost."""
    deadline = time.monotonic() + seconds
    lost = 0
    while time.monotonic() < deadline:
        lost += scheduler.move_due().lost_runs
        time.sleep(settings.schedule_interval_seconds)
    return lost


def test_runs_that_finish_while_redis_is_paused_settle_once_and_only_lost_ones_are_taken(
    own_redis: RedisServer,
) -> None:
    client, settings, ledger, scheduler, keys = _stack(own_redis)
    refs = [(key, HANDLER, "1.1") for key in keys]
    scheduler.move_due()  # a pass before the pause
    _pause(own_redis, settings.lease_seconds + stall_seconds(settings) + 0.5)

    # The first pass after it: every lease has run out, and none is published as lost.
    moved = scheduler.move_due()
    assert (moved.lost_runs, moved.pairs) == (0, 0)
    assert client.llen(settings.queue) == 0
    # Nor can another worker take one, e.g. on a pair message from before the pause.
    assert {c.state for c in ledger.claim(refs, "B|2|y")} == {Claim.BUSY}

    # The runs that finished during the pause settle now: each done, once.
    done = [Settlement(ref, "done", b"{}") for ref in refs[:SETTLED]]
    assert ledger.settle(done, "A|1|x") == ["ok"] * SETTLED

    # Passes every interval, as the workers make them: after the grace, only the runs whose
    # holder never came back are lost, and taken once.
    lost = _passes(scheduler, settings, settings.lease_seconds + 0.5)
    assert lost == PAIRS - SETTLED
    claims = ledger.claim(refs, "B|2|y")
    taken = [ref[0] for ref, c in zip(refs, claims, strict=True) if c.state is Claim.MINE]
    assert taken == keys[SETTLED:]
    skipped = {c.reason for c in claims[:SETTLED]}
    assert skipped == {"done"}

    # B settles the runs it took; then passes for longer than a lease and a grace, where a late
    # copy would show: nothing more is lost, and a claim by anyone finds every pair done.
    assert ledger.settle([Settlement(ref, "done", b"{}") for ref in refs[SETTLED:]], "B|2|y") == [
        "ok"
    ] * (PAIRS - SETTLED)
    assert _passes(scheduler, settings, 2 * settings.lease_seconds + 0.5) == 0
    late = ledger.claim(refs, "C|3|z")
    assert {(c.state, c.reason) for c in late} == {(Claim.SKIP, "done")}
    # Runs granted per pair, every claim counted: A's at admission, then B's, then C's.
    granted = {key: 1 for key in keys}
    for ref, c in [*zip(refs, claims, strict=True), *zip(refs, late, strict=True)]:
        granted[ref[0]] += c.state is Claim.MINE
    assert {granted[k] for k in keys[:SETTLED]} == {1}
    assert {granted[k] for k in keys[SETTLED:]} == {2}  # A's run lost with A, B's the one
    client.close()


def test_without_a_stall_a_lapsed_lease_is_taken_over_at_once(own_redis: RedisServer) -> None:
    """Passes every interval, no pause: leases that run out are lost runs at the next pass."""
    client, settings, ledger, scheduler, keys = _stack(own_redis)
    assert _passes(scheduler, settings, settings.lease_seconds + 0.5) == PAIRS
    claims = ledger.claim([(key, HANDLER, "1.1") for key in keys], "B|2|y")
    assert {c.state for c in claims} == {Claim.MINE}
    client.close()
