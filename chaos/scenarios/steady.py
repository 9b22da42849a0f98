"""0: the measured maximum; 1: steady load at ~70% of it."""

from __future__ import annotations

import time

from chaos.load import Background, ack_rate, acked_keys, percentile
from chaos.report import Row, count, drain
from chaos.scenarios.base import Ctx, account, deliveries, sender, start_stack


def maximum(ctx: Ctx) -> Row:
    """Closed loop (32 senders back to back), then the time until every event took effect."""
    row = Row("0", "maximum throughput (closed loop, 32 senders)")
    duration = ctx.pick(5, 2)
    with ctx.cluster("s0-max") as cluster:
        url, _ = start_stack(cluster)
        load = Background(sender(url), "closed_loop", "max", 32, duration).start()
        sent = load.join(duration + 60)
        if not any(d.attempts for d in sent):
            raise RuntimeError("the load client sent nothing (machine overloaded?); use --rate")
        t0 = min(d.attempts[0].start for d in sent if d.attempts)
        t_sent = max(d.acked_at or t0 for d in sent)
        drain(cluster, acked_keys(sent), 120)
        count(row, cluster, sent)
        last_effect = max(cluster.store.effect_times().values(), default=t_sent)
        # End to end: from the first request until every acknowledged event took effect.
        e2e_rate = row.processed / max(last_effect - t0, 1e-9)
        ctx.max_rate = e2e_rate
        row.recovery_s = round(max(0.0, last_effect - t_sent), 1)
        row.figures.update(
            ingress_acks_per_s=round(ack_rate(sent), 1),
            end_to_end_events_per_s=round(e2e_rate, 1),
            drain_after_load_s=row.recovery_s,
        )
        row.check("something was processed", row.processed > 0)
    return row


def steady(ctx: Ctx) -> Row:
    rate = round(0.7 * ctx.max_rate, 1)
    duration = ctx.pick(60, 5)
    row = Row("1", f"steady {duration:.0f}s at 70% of max ({rate}/s)")
    with ctx.cluster("s1-steady") as cluster:
        url, _ = start_stack(cluster)
        batch = deliveries(int(rate * duration), "steady")
        load = Background(sender(url), "at_rate", batch, rate).start()
        batch = load.join(duration + 120)
        t_sent = max((d.acked_at for d in batch if d.acked_at), default=time.time())
        drain(cluster, acked_keys(batch), 60)
        account(row, cluster, batch)
        effects = cluster.store.effect_times()
        last = max(effects.values(), default=t_sent)
        row.recovery_s = round(max(0.0, last - t_sent), 1)
        acked = [d for d in batch if d.acked]
        latencies = sorted(d.ack_latency or 0 for d in acked)
        # From the 2xx to the side effect: how far behind the workers ran.
        lag = [effects[d.key] - d.acked_at for d in acked if d.key in effects and d.acked_at]
        p50_lag, p99_lag = percentile(lag, 50), percentile(lag, 99)
        row.figures.update(
            offered_per_s=rate,
            acked_per_s=round(ack_rate(batch), 1),
            p50_ack_ms=round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            retried_deliveries=sum(1 for d in batch if len(d.attempts) > 1),
            ack_to_effect_p50_ms=None if p50_lag is None else round(p50_lag * 1000, 1),
            ack_to_effect_p99_ms=None if p99_lag is None else round(p99_lag * 1000, 1),
            drain_after_load_s=row.recovery_s,
        )
        row.check("every delivery acknowledged", row.acked == row.sent, row.acked)
        # Otherwise the figures above measure the harness, not the pipeline.
        behind = float(row.figures.get("sender_lag_p99_ms") or 0.0)
        row.check("the load client kept to its schedule (p99 lag < 1 s)", behind < 1000, behind)
    return row
