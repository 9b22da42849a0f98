"""17a: the Redis master SIGKILLed under load; Sentinel promotes the replica.

A master, a replica and three sentinels on 127.0.0.1 (chaos/sentinels.py); the ingress and two
workers know only the sentinels (a ``sentinel://`` URL). Under load the master is SIGKILLed; the
sentinels promote the replica within a few seconds, and the old master is started again a moment
later (as a supervisor would), when the sentinels make it a replica of the new one.

- ``17a`` with ``UPHOOKS_ACK_REPLICAS=1``: a 2xx means the replica had the delivery, so nothing
  acknowledged may be lost, and every pair must run once.
- ``17a0`` with ``UPHOOKS_ACK_REPLICAS=0``: a 2xx means the master had it. What the replica had
  not received when the master died is lost: counted here (not failed), with how long before
  the kill the lost ones were acknowledged (docs/scaling.md).
- ``17a2``: as 17a with two replicas, so one is left to confirm after the failover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from chaos.load import Background, Delivery, acked_keys, percentile
from chaos.report import Row, check_runs, count, drain, quiesce
from chaos.scenarios.base import Ctx, deliveries, sender, start_stack
from chaos.sentinels import ReplicatedRedis
from chaos.stack import Cluster
from uphooks.redis import sync_client
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer

#: A failover takes a few seconds (down-after 1 s + an election); a lease well above it keeps
#: the workers' self-fencing (workers/leases.py) out of this scenario's way.
OVERRIDES: dict[str, object] = {"lease_seconds": 10}


@dataclass
class SentinelCluster(Cluster):
    """A Cluster whose Redis is a :class:`ReplicatedRedis`, reached through the sentinels."""

    group: ReplicatedRedis | None = field(default=None)
    replicas: int = 1

    def start_redis(self) -> RedisServer:
        self.group = ReplicatedRedis(self.root / "redis", replicas=self.replicas).start()
        return self.group.master

    @property
    def redis_url(self) -> str:
        assert self.group is not None
        return self.group.sentinel_url

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return sync_client(Settings(redis_url=self.redis_url), timeout=timeout)

    def stop(self) -> None:
        self.redis_server = None  # the group's servers are stopped below
        super().stop()
        if self.group is not None:
            self.group.stop()


def _failover(ctx: Ctx, sid: str, ack_replicas: int, replicas: int = 1) -> Row:
    cap = ctx.pick(200.0, 100.0)
    rate = float(round(max(10.0, min(cap, 0.6 * ctx.max_rate))))
    duration = ctx.pick(45, 20)
    row = Row(
        sid,
        f"master SIGKILL, Sentinel failover: {replicas} replica(s), ACK_REPLICAS={ack_replicas}",
    )
    overrides = {**OVERRIDES, "ack_replicas": ack_replicas}
    cluster = SentinelCluster(ctx.out / f"s{sid}-failover", overrides=overrides, replicas=replicas)
    try:
        cluster.start_redis()
        group = cluster.group
        assert group is not None
        url, _ = start_stack(cluster)
        batch = deliveries(int(rate * duration), sid)
        old = group.master
        load = Background(sender(url, give_up_s=120), "at_rate", batch, rate).start()
        time.sleep(duration / 3)
        old.kill()
        t_kill = time.time()
        deadline = time.monotonic() + 30
        while group.master_port() in (None, old.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        t_promoted = time.time()
        time.sleep(1.0)
        old.start()  # the sentinels turn it into a replica of the new master
        t_back = time.time()
        batch = load.join(duration + 180)
        acked = acked_keys(batch)
        row.recovery_s = drain(cluster, acked, 120)
        quiesce(row, cluster, timeout_s=90)
        count(row, cluster, batch)
        lost = sorted(acked - set(cluster.store.effect_times()) - cluster.dead_lettered())
        acked_at = {d.key: d.acked_at for d in batch if d.key and d.acked_at}
        before_kill = [t_kill - acked_at[k] for k in lost if k in acked_at]
        answered = [a for d in batch for a in d.attempts if a.end >= t_kill]
        first_ok = min(
            (a.end for a in answered if a.status and 200 <= a.status < 300 and a.start > t_kill),
            default=None,
        )
        row.figures.update(
            rate_per_s=rate,
            measured_max_per_s=round(ctx.max_rate, 1),
            failover_s=round(t_promoted - t_kill, 2),
            old_master_back_after_s=round(t_back - t_kill, 2),
            first_2xx_after_kill_s=None if first_ok is None else round(first_ok - t_kill, 2),
            answers_503=sum(1 for d in batch for a in d.attempts if a.status == 503),
            p50_ack_ms_before_kill=_ms(percentile(_latencies(batch, until=t_kill), 50)),
            p99_ack_ms_before_kill=_ms(percentile(_latencies(batch, until=t_kill), 99)),
            p50_ack_ms=_ms(percentile(_latencies(batch), 50)),
            slowest_attempt_s=round(max(a.end - a.start for d in batch for a in d.attempts), 2),
        )
        if ack_replicas:
            check_runs(row, cluster, acked)
            row.check("the master was promoted away", t_promoted - t_kill < 30)
        else:
            # Loss is what this variant measures: counted in figures, not failed.
            row.figures["acked_then_lost"] = len(lost)
            row.figures["lost_acked_within_s_before_kill"] = (
                round(max(before_kill), 3) if before_kill else None
            )
            row.lost = 0
            check_runs(row, cluster, acked - set(lost))
    finally:
        cluster.stop()
    return row


def _latencies(batch: list[Delivery], until: float | None = None) -> list[float]:
    return [
        lat
        for d in batch
        if (lat := d.ack_latency) is not None
        and (until is None or (d.acked_at is not None and d.acked_at < until))
    ]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def failover_ack_replicas(ctx: Ctx) -> Row:
    return _failover(ctx, "17a", 1)


def failover_no_ack_replicas(ctx: Ctx) -> Row:
    return _failover(ctx, "17a0", 0)


def failover_ack_two_replicas(ctx: Ctx) -> Row:
    """As 17a with two replicas: one is left to confirm once the other was promoted."""
    return _failover(ctx, "17a2", 1, replicas=2)
