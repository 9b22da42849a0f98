"""6: an event that kills the process handling it, every time, in the middle of normal load."""

from __future__ import annotations

import itertools

from chaos.load import Background, acked_keys
from chaos.report import Row
from chaos.scenarios.base import Ctx, account, deliveries, sender, start_stack


def poison(ctx: Ctx) -> Row:
    rate, duration = ctx.fault_rate, ctx.pick(12, 8)
    n = int(rate * duration)
    poisoned = {int(n * f) for f in ((0.2, 0.45, 0.7) if not ctx.quick else (0.3,))}
    row = Row("6", f"poison event kills its worker ({len(poisoned)} of them, {rate:.0f}/s)")
    with ctx.cluster("s6-poison") as cluster:
        url, _ = start_stack(cluster)
        limit = cluster.settings.poison_max_deliveries
        batch = deliveries(n, "s6", lambda i: {"mode": "poison"} if i in poisoned else None)
        batch = Background(sender(url), "at_rate", batch, rate).start().join(duration + 120)
        poison_keys = {batch[i].key for i in poisoned if batch[i].key}

        # A poison run kills its process: a pair that process had finished but not yet
        # recorded (at most 50 ms of work, workers/dispatch.py) runs again, and its effect is
        # found applied (at-least-once, README): excused as for the harness's own kills.
        def deaths() -> dict[int, float]:
            return {r.pid: r.started for k in poison_keys for r in cluster.store.runs(k)}

        account(
            row, cluster, batch, drain_s=90, keys=acked_keys(batch) - poison_keys, killed=deaths
        )
        runs = {k: len(cluster.store.runs(k)) for k in poison_keys}
        dead = cluster.dead_lettered()
        # The others kept flowing: the longest pause between two effects while poison was live.
        times = sorted(cluster.store.effect_times().values())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        row.figures.update(
            poison_runs=sorted(runs.values()),
            poison_max_deliveries=limit,
            longest_pause_between_effects_s=round(max(gaps, default=0.0), 2),
        )
        row.check("every poison event dead-lettered", poison_keys <= dead, poison_keys - dead)
        # A message holding several deliveries dies `limit` times, is split, and the poison
        # one dies `limit` times more on its own: 2 x limit runs at most, never a hot loop.
        row.check(
            f"poison events ran at most 2 x {limit} times (no hot loop)",
            all(limit <= r <= 2 * limit for r in runs.values()),
            runs,
        )
        row.check("only poison events dead-lettered", dead <= poison_keys, dead - poison_keys)
        row.evidence += [
            line for p in cluster.procs for line in p.log_lines("dead-lettered", "splitting")
        ][:3]
    return row
