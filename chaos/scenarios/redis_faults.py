"""8: redis-server SIGKILLed and restarted from its AOF; 10: Redis paused or slowed."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable

from chaos.load import Attempt, Background, Delivery, ack_rate, acked_keys, percentile
from chaos.proxy import BRPOP, redis_proxy
from chaos.report import Row, drain
from chaos.scenarios.base import Ctx, account, deliveries, sender, settle_queue, start_stack
from chaos.stack import Cluster


def _attempts(batch: list[Delivery]) -> list[Attempt]:
    return [a for d in batch for a in d.attempts]


def _is_2xx(a: Attempt) -> bool:
    return a.status is not None and 200 <= a.status < 300


def _window_checks(row: Row, batch: list[Delivery], t_from: float, t_to: float) -> None:
    """What the ingress answered to requests made entirely inside a fault window."""
    inside = [a for a in _attempts(batch) if a.start >= t_from + 0.05 and a.end <= t_to]
    answered = [a for a in _attempts(batch) if t_from <= a.end <= t_to]
    statuses = Counter(str(a.status or "error") for a in answered)
    row.figures["answers_during_fault"] = dict(sorted(statuses.items()))
    wrong = [a for a in inside if _is_2xx(a)]
    row.check("never 2xx while Redis could not keep the delivery", not wrong, len(wrong))
    row.check("503 answered during the fault", any(a.status == 503 for a in answered))
    after = [a.end for a in _attempts(batch) if _is_2xx(a) and a.start >= t_to]
    row.figures["first_2xx_after_fault_s"] = round(min(after) - t_to, 2) if after else None


def _fault_during_load(
    ctx: Ctx, cluster: Cluster, url: str, run: str, inject: Callable[[], tuple[float, float]]
) -> tuple[list[Delivery], list[Delivery], float, float]:
    """The load, and beside it a probe: 5 deliveries/s from a process of its own, whose
    answer times are the ingress's own (a busy load client adds its own delays)."""
    rate, duration = ctx.fault_rate, ctx.pick(12, 8)
    batch = deliveries(int(rate * duration), run)
    probe = deliveries(int(5 * duration), run + "p")
    load = Background(sender(url), "at_rate", batch, rate).start()
    prober = Background(sender(url, max_connections=25), "at_rate", probe, 5.0).start()
    time.sleep(duration * 0.3)
    t_from, t_to = inject()
    batch = load.join(duration + 180)
    probe = prober.join(duration + 180)
    s = cluster.settings
    deadline = s.visibility_timeout_seconds + s.restore_sweep_seconds + 60
    drain(cluster, acked_keys([*batch, *probe]), deadline, settle=settle_queue(cluster))
    return batch, probe, t_from, t_to


def redis_killed(ctx: Ctx, fsync: str, sid: str) -> Row:
    down_s = 3.0
    row = Row(sid, f"redis-server SIGKILL {down_s:.0f}s + AOF restart ({fsync})")
    with ctx.cluster(f"s{sid}-redis-kill-{fsync}", appendfsync=fsync) as cluster:
        server = cluster.redis_server
        assert server is not None
        url, _ = start_stack(cluster)
        # Throughput with this appendfsync policy: 32 senders back to back.
        span = ctx.pick(4, 1.5)
        burst = Background(sender(url), "closed_loop", f"{sid}tp", 32, span).start().join(span + 60)
        burst_lat = [lat for d in burst if (lat := d.ack_latency) is not None]
        drain(cluster, acked_keys(burst), 60)

        def kill_and_restart() -> tuple[float, float]:
            server.kill()
            t_down = time.time()
            time.sleep(down_s)
            t_up = time.time()
            server.start()
            row.figures["restart_took_s"] = round(time.time() - t_up, 2)
            return t_down, t_up

        batch, probe, t_down, t_up = _fault_during_load(ctx, cluster, url, sid, kill_and_restart)
        account(row, cluster, [*burst, *batch, *probe])
        _window_checks(row, [*batch, *probe], t_down, t_up)
        effects = cluster.store.effect_times()
        acked_before = [d.key for d in batch if d.key and d.acked_at and d.acked_at < t_down]
        last = max((effects[k] for k in acked_before if k in effects), default=t_up)
        row.recovery_s = round(max(0.0, last - t_up), 1)
        p99 = percentile(burst_lat, 99)
        row.figures.update(
            appendfsync=fsync,
            closed_loop_acks_per_s=round(ack_rate(burst), 1),
            closed_loop_p99_ms=None if p99 is None else round(p99 * 1000, 1),
            acked_before_kill=len(acked_before),
        )
        gave_up = len([d for d in [*batch, *probe] if not d.acked])
        row.check("every delivery acknowledged in the end (sender retries)", not gave_up, gave_up)
        row.evidence += [
            line
            for p in cluster.procs
            for line in p.log_lines("goes back to the queue", "Unrecoverable", "lost")
        ][:4]
    return row


def redis_killed_always(ctx: Ctx) -> Row:
    return redis_killed(ctx, "always", "8a")


def redis_killed_everysec(ctx: Ctx) -> Row:
    return redis_killed(ctx, "everysec", "8b")


def _answered_in_time(
    row: Row, probe: list[Delivery], load: list[Delivery], limit_s: float, t_from: float
) -> None:
    """Checked on the probe's answers; the loaded sender's slowest is reported beside them."""
    attempts = sorted(_attempts(probe), key=lambda a: a.end - a.start)
    slow = [a for a in attempts if a.end - a.start > limit_s]
    timeouts = [a for a in attempts if a.status is None]
    row.figures["probe_slowest_answer_s"] = round(attempts[-1].end - attempts[-1].start, 2)
    loaded = [a.end - a.start for a in _attempts(load)]
    row.figures["load_slowest_answer_s"] = round(max(loaded, default=0.0), 2)
    row.figures["load_transport_errors"] = sum(1 for a in _attempts(load) if a.status is None)
    row.check(f"the probe answered within ack timeout + 1 s ({limit_s:.1f}s)", not slow, len(slow))
    row.check("no probe timeout or connection error", not timeouts, len(timeouts))
    for a in attempts[-2:]:
        row.evidence.append(
            f"slowest probe answer: sent {a.start - t_from:+.2f}s from the fault's start, "
            f"{a.status or a.error} after {a.end - a.start:.2f}s"
        )


def _answers_through(
    ctx: Ctx,
    row: Row,
    cluster: Cluster,
    url: str,
    run: str,
    fault: Callable[[], tuple[float, float]],
) -> None:
    """A fault the ingress answers through (Redis paused or slow): every delivery accounted
    for, the answers inside the fault checked, the probe answered within the ack timeout, and
    the recovery is the first 2xx after the fault."""
    batch, probe, t_from, t_to = _fault_during_load(ctx, cluster, url, run, fault)
    account(row, cluster, [*batch, *probe])
    _window_checks(row, [*batch, *probe], t_from, t_to)
    limit = cluster.settings.ack_timeout_seconds + 1
    _answered_in_time(row, probe, batch, limit, t_from)
    row.recovery_s = row.figures["first_2xx_after_fault_s"]


def redis_paused(ctx: Ctx) -> Row:
    pause_s = ctx.pick(6, 4)
    row = Row("10a", f"redis-server paused {pause_s:.0f}s (SIGSTOP)")
    with ctx.cluster("s10a-redis-paused") as cluster:
        server = cluster.redis_server
        assert server is not None and server.process is not None
        pid = server.process.pid
        url, _ = start_stack(cluster)

        def pause() -> tuple[float, float]:
            os.kill(pid, signal.SIGSTOP)
            t_stop = time.time()
            time.sleep(pause_s)
            os.kill(pid, signal.SIGCONT)
            return t_stop, time.time()

        _answers_through(ctx, row, cluster, url, "s10a", pause)
    return row


def redis_slowed(ctx: Ctx) -> Row:
    slow_s, latency = ctx.pick(6, 4), 4.0
    row = Row("10b", f"Redis {latency:.0f}s slower for {slow_s:.0f}s (proxy, ingress side)")
    with ctx.cluster("s10b-redis-slowed") as cluster, redis_proxy(cluster) as proxy:
        url, _ = start_stack(cluster, ingress_redis_url=proxy.url)

        def slow_down() -> tuple[float, float]:
            proxy.latency_s = latency
            t_slow = time.time()
            time.sleep(slow_s)
            proxy.latency_s = 0.0
            return t_slow, time.time()

        _answers_through(ctx, row, cluster, url, "s10b", slow_down)
    return row


def _lost_after_brpop(
    ctx: Ctx,
    sid: str,
    title: str,
    chaos: dict[str, object] | None,
    reply_contains: bytes = b"",
    nth: int = 1,
    workers: int = 1,
) -> Row:
    """Redis pops a message for a worker (BRPOP) and that connection drops before the reply
    arrives: the message is in neither the queue nor kombu's unacknowledged set."""
    row = Row(sid, title)
    # One pool process per worker: a busy worker does not fetch, so who gets what is known.
    overrides = {"worker_concurrency": 1}
    with (
        ctx.cluster(f"s{sid}-brpop-reply-lost", overrides=overrides) as cluster,
        redis_proxy(cluster) as proxy,
    ):
        url, _ = start_stack(cluster, workers=workers, worker_redis_url=proxy.url)
        proxy.arm(
            BRPOP,
            action="cut_on_reply",
            reply_prefix=b"*2\r\n",
            reply_contains=reply_contains,
            nth=nth,
        )
        time.sleep(2)  # kombu's BRPOPs block 1 s: let every one be sent again, armed
        batch = sender(url).at_rate(deliveries(1, f"s{sid}", lambda i: chaos), 1.0)
        tripped = proxy.tripped.wait(30)
        s = cluster.settings
        # The lost message's item in the ledger's schedule comes due after
        # recover_after_seconds and the scheduler publishes it again; past the visibility
        # timeout too (a restored message would be back by then).
        deadline = max(s.visibility_timeout_seconds, 2 * s.recover_after_seconds) + 20
        expected = 1 + int(str((chaos or {}).get("k", 0)))
        account(row, cluster, batch, drain_s=deadline, expected=lambda key: expected)
        effect_at = cluster.store.effect_times().get(batch[0].key or "")
        if effect_at is not None and proxy.tripped_at is not None:
            row.recovery_s = round(effect_at - proxy.tripped_at, 1)
        row.check("a BRPOP reply carrying the message was cut off", tripped)
        runs = cluster.store.runs(batch[0].key) if batch[0].key else []
        row.figures["runs"] = [f"{r.attempt}:{r.outcome}" for r in runs]
        row.evidence += [line for p in cluster.procs for line in p.log_lines("published again")][:2]
    return row


def connection_lost_after_brpop(ctx: Ctx) -> Row:
    return _lost_after_brpop(ctx, "8c", "connection lost as BRPOP hands a worker a message", None)


def retry_lost_after_brpop(ctx: Ctx) -> Row:
    """The same for a retry: the first attempt fails (retry after 2 s), the scheduler publishes
    the pair message (its body names ``pairs``) when it is due, and the BRPOP reply carrying it
    is cut. The pair stays ``queued`` in the ledger's schedule and is published again after
    ``recover_after_seconds``."""
    return _lost_after_brpop(
        ctx,
        "8d",
        "connection lost as BRPOP hands a worker a retry",
        {"mode": "fail", "k": 1, "retry_after": 2},
        b"pairs",
        nth=1,
        workers=2,
    )
