"""5: transient failures and retries; 9: Redis gone exactly when a retry is recorded.

A retry is no longer a message a worker publishes: the run's outcome goes into the ledger
(settle.lua, one EVALSHA) and the scheduler publishes the pair message when it is due. So the
faults are placed on the settle call, found by its script's SHA1 in the command bytes."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections import Counter

from chaos.load import Background, Delivery, acked_keys
from chaos.proxy import redis_proxy
from chaos.report import Row, drain
from chaos.scenarios.base import Ctx, account, deliveries, sender, start_stack
from chaos.stack import Cluster
from workers.ledger import script_source

#: The settle script's EVALSHA as redis-py sends it: how the proxy spots a run's outcome.
SETTLE = hashlib.sha1(script_source("settle.lua").encode()).hexdigest().encode()


def _task_deliveries(cluster: Cluster) -> list[int]:
    """How often the broker handed each task message to a worker (the poison counters)."""
    with cluster.client() as r:
        names = list(r.scan_iter(cluster.keys.deliveries_of("*"), count=1000))
        return sorted(int(v or 0) for v in r.mget(names)) if names else []


def transient_failures(ctx: Ctx) -> Row:
    k, n = 3, int(ctx.pick(20, 5))
    row = Row("5a", f"handler fails transiently k={k} times")
    with ctx.cluster("s5a-transient") as cluster:
        url, _ = start_stack(cluster)
        batch = deliveries(n, "s5a", lambda i: {"mode": "fail", "k": k})
        batch = Background(sender(url), "at_rate", batch, 10.0).start().join(120)
        row.recovery_s = account(row, cluster, batch, drain_s=60, expected=lambda key: k + 1)
        shapes: Counter[str] = Counter()
        for key in acked_keys(batch):
            runs = cluster.store.runs(key)
            shapes[" ".join(f"{r.attempt}:{r.outcome}" for r in runs)] += 1
        expected = " ".join([f"{a}:fail" for a in range(1, k + 1)] + [f"{k + 1}:effect"])
        row.figures.update(run_shapes=dict(shapes), expected_shape=expected)
        row.check(f"every event ran k+1={k + 1} times, 1 effect", shapes == {expected: n}, shapes)
    return row


def kill_between_publish_and_ack(ctx: Ctx) -> Row:
    """The child that recorded a retry is SIGKILLed the moment Redis confirmed the settle,
    before the original message was acknowledged: the original comes back (a copy, a no-op by
    fencing) and the retry runs once: runs 1:fail 2:effect, 1 effect."""
    row = Row("5b", "kill between retry settle and original's ack")
    with ctx.cluster("s5b-publish-kill") as cluster, redis_proxy(cluster) as proxy:
        url, _ = start_stack(cluster, workers=1, worker_redis_url=proxy.url)
        [event] = deliveries(1, "s5b", lambda i: {"mode": "fail", "k": 1})
        killed: list[int] = []

        def kill_the_settler() -> None:
            runs = [r for r in cluster.store.runs() if r.outcome == "fail"]
            if runs:
                os.kill(runs[-1].pid, signal.SIGKILL)
                killed.append(runs[-1].pid)

        # On the settle's result (an array), not on a -NOSCRIPT error: redis-py then sends
        # the script itself on the same connection, and that reply is the one Redis did.
        proxy.arm(SETTLE, action="after_reply", on_trip=kill_the_settler, reply_prefix=b"*")
        sender(url).at_rate([event], 1.0)
        tripped = proxy.tripped.wait(30)
        row.recovery_s = account(row, cluster, [event], drain_s=60, expected=lambda key: 2)
        runs = cluster.store.runs(event.key) if event.key else []
        messages = _task_deliveries(cluster)
        row.figures.update(
            killed_pid=killed,
            runs=[f"{r.attempt}:{r.outcome}" for r in runs],
            task_deliveries=messages,
        )
        row.check("the retry's settle tripped the kill", tripped and bool(killed))
        row.check(
            "the retry ran as attempt 2 (the settle was recorded before the kill)",
            [f"{r.attempt}:{r.outcome}" for r in runs] == ["1:fail", "2:effect"],
            [f"{r.attempt}:{r.outcome}" for r in runs],
        )
        row.check(
            "the original message was delivered again (a no-op), 1 effect",
            max(messages, default=0) >= 2 and [r.outcome for r in runs].count("effect") == 1,
            messages,
        )
        row.evidence += [line for p in cluster.procs for line in p.log_lines("WorkerLostError(")][
            :1
        ]
    return row


def redis_gone_at_retry_publish(ctx: Ctx, outage_s: float, sid: str) -> Row:
    """Workers reach Redis through a proxy; the settle call recording a handler's retry cuts
    Redis off (the call never reaches Redis; the worker retries it, or the lease lapses)."""
    row = Row(sid, f"Redis gone {outage_s:.0f}s when a retry is recorded")
    # Time limits above the dispatcher's 20 s of Redis retries around the settle, so the limits
    # do not cut them short (as production's defaults do not).
    timings = {
        "task_soft_time_limit_seconds": 24,
        "task_time_limit_seconds": 26,
        "visibility_timeout_seconds": 30,
    }
    with (
        ctx.cluster(f"s{sid}-retry-publish-outage", overrides=timings) as cluster,
        redis_proxy(cluster) as proxy,
    ):
        url, _ = start_stack(cluster, workers=1, worker_redis_url=proxy.url)
        warm = deliveries(20, f"s{sid}w")
        sender(url).at_rate(warm, 50.0)
        drain(cluster, acked_keys(warm), 30)
        [event] = deliveries(1, f"s{sid}", lambda i: {"mode": "fail", "k": 1})
        proxy.arm(SETTLE, action="outage", outage_s=outage_s)
        sender(url).at_rate([event], 1.0)
        tripped = proxy.tripped.wait(30)
        t_back = time.time() + outage_s
        everything: list[Delivery] = [*warm, event]
        s = cluster.settings
        deadline = outage_s + s.visibility_timeout_seconds + s.restore_sweep_seconds + 40
        account(
            row,
            cluster,
            everything,
            drain_s=deadline,
            expected=lambda key: 2 if key == event.key else 1,
        )
        runs = cluster.store.runs(event.key) if event.key else []
        effect_at = cluster.store.effect_times().get(event.key or "")
        row.recovery_s = None if effect_at is None else round(effect_at - t_back, 1)
        row.figures.update(
            runs=[f"{r.attempt}:{r.outcome}" for r in runs],
            task_deliveries=_task_deliveries(cluster),
        )
        row.check("the retry's settle tripped the outage", tripped)
        row.check(
            "the event was not dropped: it failed once, then took effect once",
            [r.outcome for r in runs].count("effect") == 1,
            [r.outcome for r in runs],
        )
        row.evidence += [
            line
            for p in cluster.procs
            for line in p.log_lines("goes back to the queue", "Connection to broker lost")
        ][:3]
    return row


def retry_publish_short_outage(ctx: Ctx) -> Row:
    return redis_gone_at_retry_publish(ctx, ctx.pick(5, 4), "9a")


def retry_publish_long_outage(ctx: Ctx) -> Row:
    # Longer than the dispatcher's 20 s of publish retries: the give-up path is exercised.
    return redis_gone_at_retry_publish(ctx, 22, "9b")
