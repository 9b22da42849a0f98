"""11a: messages lost between the pop and the unacked record, and pool kills, under load;
11c: every message delivered three times (and once more, late). Both count handler runs.

The ledger (workers/ledger.py) treats messages as wake-ups: a lost one is published again by
the scheduler when its item in ``<prefix>:due`` comes due (``recover_after_seconds``), and a
copy of one is a no-op by fencing. These two scenarios check both at once, by runs per pair.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from typing import Any, Self

import redis

from chaos.load import Background, acked_keys
from chaos.proxy import BRPOP, redis_proxy
from chaos.report import Row, check_runs, count, drain, quiesce
from chaos.scenarios.base import Ctx, deliveries, sender, settle_queue, start_stack
from chaos.stack import Cluster, Proc, children_of

SLOW = {"mode": "sleep", "s": 0.2}


class _Beside(threading.Thread):
    """A daemon thread that runs (``run``, until ``halt`` is set) inside a ``with`` block."""

    join_s = 5.0

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.halt = threading.Event()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(self.join_s)


class LagSampler(_Beside):
    """Samples the age of the oldest overdue item in ``<prefix>:due`` (what
    ``Scheduler.lag()`` returns and ``uphooks_ledger_oldest_overdue_seconds`` exports)."""

    def __init__(self, cluster: Cluster, every_s: float = 0.5) -> None:
        self._cluster = cluster
        self._every = every_s
        self.peak = 0.0
        self.samples = 0
        super().__init__()

    def run(self) -> None:
        with self._cluster.client() as r:
            while not self.halt.wait(self._every):
                with contextlib.suppress(redis.RedisError):
                    oldest = r.zrange(self._cluster.keys.due, 0, 0, withscores=True)
                    lag = max(0.0, time.time() - oldest[0][1]) if oldest else 0.0
                    self.peak = max(self.peak, lag)
                    self.samples += 1


class ChildKiller(_Beside):
    """SIGKILLs a random pool process of a random worker every ``low``-``high`` seconds."""

    join_s = 10.0

    def __init__(self, workers: list[Proc], low: float, high: float, seed: int = 11) -> None:
        self._workers = workers
        self._low, self._high = low, high
        self._rng = random.Random(seed)
        self.killed: dict[int, float] = {}
        super().__init__()

    def run(self) -> None:
        while not self.halt.wait(self._rng.uniform(self._low, self._high)):
            alive = [w for w in self._workers if w.alive()]
            if not alive:
                continue
            children = children_of(self._rng.choice(alive).pid)
            if not children:
                continue
            pid = self._rng.choice(children)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.killed[pid] = time.time()


def message_keys(reply: bytes) -> list[str]:
    """The delivery keys a BRPOP reply's message names (route ``keys`` or ``pairs``)."""
    parts = reply.split(b"\r\n")
    if len(parts) < 5:
        return []
    try:
        body = json.loads(json.loads(parts[4])["body"])
    except (ValueError, KeyError, TypeError):
        return []
    keys = [str(k) for k in body[0][0]] if body[0] and body[0][0] else []
    return keys + [str(p[0]) for p in body[1].get("pairs", [])]


def loss_and_kills(ctx: Ctx) -> Row:
    """Load with ~1% of the popped messages dropped before kombu records them as unacked (the
    proxy cuts every 100th BRPOP reply carrying one) and a pool process SIGKILLed every 2-5 s."""
    cap = ctx.pick(200.0, 100.0)
    rate = float(round(max(10.0, min(cap, 0.6 * ctx.max_rate))))
    duration, every = ctx.pick(300, 30), 100
    row = Row("11a", f"1% of pops lost + child kills, {duration:.0f}s at {rate:.0f}/s")
    with ctx.cluster("s11a-loss-and-kills") as cluster, redis_proxy(cluster) as proxy:
        url, workers = start_stack(cluster, worker_redis_url=proxy.url)
        proxy.arm(BRPOP, action="cut_on_reply", reply_prefix=b"*2\r\n", every=every)
        batch = deliveries(int(rate * duration), "s11a", lambda i: SLOW if i % 50 == 25 else None)
        with (
            LagSampler(cluster) as lag,
            ChildKiller(workers, 2, 5) as killer,
        ):
            batch = Background(sender(url), "at_rate", batch, rate).start().join(duration + 300)
            t_sent = time.time()
            proxy.disarm()
            killer_done = dict(killer.killed)
        s = cluster.settings
        acked = acked_keys(batch)
        with LagSampler(cluster) as lag_after:
            drain(
                cluster,
                acked,
                s.lease_seconds + 8 * s.recover_after_seconds + 120,
                settle=settle_queue(cluster),
            )
            row.recovery_s = round(time.time() - t_sent, 1)
            quiesce(row, cluster)
        count(row, cluster, batch)
        check_runs(row, cluster, acked, killed=killer_done)
        effects = cluster.store.effect_times()
        acked_at = {d.key: d.acked_at for d in batch if d.key and d.acked_at}
        dropped = [(at, message_keys(reply)) for at, reply in proxy.dropped]
        dropped_keys = {k for _, keys in dropped for k in keys}
        unrecovered = sorted(dropped_keys - set(effects) - cluster.dead_lettered())
        lags = [effects[k] - at for at, keys in dropped for k in keys if k in effects]
        from_ack = [
            effects[k] - acked_at[k] for k in dropped_keys if k in effects and k in acked_at
        ]
        recovered = [line for p in cluster.procs for line in p.log_lines("published again")]
        row.figures.update(
            rate_used_per_s=rate,
            measured_max_per_s=round(ctx.max_rate, 1),
            brpop_replies_with_a_message=proxy.replies_seen,
            messages_dropped=len(dropped),
            unparsed_drops=sum(1 for _, keys in dropped if not keys),
            deliveries_in_dropped_messages=len(dropped_keys),
            recovered=len(dropped_keys) - len(unrecovered),
            recovery_lag_max_s_from_drop=round(max(lags), 1) if lags else None,
            recovery_lag_max_s_from_ack=round(max(from_ack), 1) if from_ack else None,
            oldest_overdue_peak_s_under_load=round(lag.peak, 1),
            oldest_overdue_peak_s_draining=round(lag_after.peak, 1),
            children_killed=len(killer_done),
            scheduler_recovery_log_lines=len(recovered),
        )
        row.evidence += recovered[:2]
        row.check("messages were dropped (about 1 in 100 pops)", bool(dropped), len(dropped))
        row.check(
            "pool processes were killed every few seconds",
            len(killer_done) >= duration / 6,
            len(killer_done),
        )
        row.check(
            "every delivery in a dropped message took effect (recovered)",
            not unrecovered,
            unrecovered[:5],
        )
        row.check("nothing dead-lettered", row.dlq == 0, row.dlq)
    return row


class Copier:
    """Pushes ``copies`` more of every message a worker takes off a queue (seen by the proxy in
    the ``BRPOP`` reply, so none slips past as polling the list would let it), the way a broker
    restore or a republish would, and keeps them for late copies (as tests/test_ledger.py)."""

    def __init__(self, client: redis.Redis, copies: int = 2) -> None:
        self._r = client
        self._copies = copies
        self.seen: dict[str, tuple[bytes, bytes]] = {}
        self.copied = 0
        self.pair_messages = 0

    def __call__(self, reply: bytes) -> None:
        parts = reply.split(b"\r\n")
        if len(parts) < 5:
            return
        queue, message = parts[2], parts[4]
        tid = str(json.loads(message)["headers"]["id"])
        if tid not in self.seen:
            self.seen[tid] = (queue, message)
            self.pair_messages += b"pairs" in message
            self._r.lpush(queue, *[message] * self._copies)
            self.copied += self._copies

    def push_late_copies(self) -> int:
        for queue, message in list(self.seen.values()):
            self._r.lpush(queue, message)
        return len(self.seen)


def three_copies(ctx: Ctx) -> Row:
    """Every message on the queue, the ingress's route messages and the scheduler's pair
    messages (retries of a handler failing twice), delivered three times at once and a fourth
    time late, after everything settled: runs per pair == expected attempts."""
    rate, n, k = min(ctx.fault_rate, 20.0), int(ctx.pick(300, 60)), 2
    row = Row("11c", f"every message delivered 3x, + a late copy ({n} deliveries)")

    def flaky(i: int) -> dict[str, Any] | None:
        return {"mode": "fail", "k": k} if i % 3 == 1 else None

    with ctx.cluster("s11c-three-copies") as cluster, cluster.client() as r:
        with redis_proxy(cluster) as proxy:
            url, _ = start_stack(cluster, worker_redis_url=proxy.url)
            batch = deliveries(n, "s11c", flaky)
            expected = {d.delivery_id: k + 1 if i % 3 == 1 else 1 for i, d in enumerate(batch)}
            proxy.tap = copier = Copier(r)
            batch = Background(sender(url), "at_rate", batch, rate).start().join(n / rate + 120)
            acked = acked_keys(batch)
            row.recovery_s = drain(cluster, acked, 120, settle=settle_queue(cluster))
            quiesce(row, cluster)
            proxy.tap = None
            late = copier.push_late_copies()
            quiesce(row, cluster)
            row.check("the copier worked", not proxy.trip_errors, proxy.trip_errors[:3])
        count(row, cluster, batch)
        by_key = {d.key: expected[d.delivery_id] for d in batch if d.key}
        check_runs(row, cluster, acked, expected=lambda key: by_key[key])
        left = cluster.schedule_size()
        row.figures.update(
            messages_taken=len(copier.seen),
            pair_messages_seen=copier.pair_messages,
            copies_pushed=copier.copied,
            late_copies_pushed=late,
            due_left=left,
        )
        row.check("the scheduler's pair messages were copied too", copier.pair_messages > 0)
        row.check("nothing left in <prefix>:due", left == 0, left)
        row.check("nothing dead-lettered", row.dlq == 0, row.dlq)
    return row
