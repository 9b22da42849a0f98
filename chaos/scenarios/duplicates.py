"""7a: one delivery sent 20 times at once; 7b: one task message handed to two workers at once."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import replace

from chaos.load import Delivery, acked_keys
from chaos.report import Row, drain
from chaos.scenarios.base import Ctx, account, deliveries, sender, start_stack
from chaos.stack import wait_ready


def same_delivery_concurrently(ctx: Ctx) -> Row:
    copies, n = 20, int(ctx.pick(50, 10))
    row = Row("7a", f"same delivery sent {copies}x concurrently ({n} deliveries)")
    with ctx.cluster("s7a-same-delivery") as cluster:
        url, _ = start_stack(cluster)
        originals = deliveries(n, "s7a")
        everything: list[Delivery] = [
            replace(d, attempts=[]) for d in originals for _ in range(copies)
        ]
        sender(url, max_connections=100).all_at_once(everything)
        account(row, cluster, everything, drain_s=60)
        row.p99_ack_ms = None  # 1000 requests at once: the client's own queue, not the ingress
        firsts: Counter[str] = Counter()
        statuses: dict[str, Counter[int]] = defaultdict(Counter)
        for d in everything:
            if d.key:
                firsts[d.key] += d.duplicate is False
            statuses[d.delivery_id].update(a.status or 0 for a in d.attempts)
        runs = Counter(r.key for r in cluster.store.runs())
        row.figures.update(
            answers=dict(sum(statuses.values(), Counter())),
            handler_runs_per_key=dict(Counter(runs.values())),
        )
        row.check("exactly one 202 (new) per delivery", set(firsts.values()) == {1}, firsts)
        row.check("the handler ran once per delivery", set(runs.values()) == {1}, runs)
    return row


def same_task_two_workers(ctx: Ctx) -> Row:
    """Queue each Celery message twice (an exact copy: same task id), then start two workers."""
    n = int(ctx.pick(10, 4))
    row = Row("7b", f"same task message delivered to two workers ({n} messages)")
    with ctx.cluster("s7b-same-task") as cluster:
        url, _ = cluster.ingress()
        batch = deliveries(n, "s7b", lambda i: {"mode": "sleep", "s": 1.0})
        for d in batch:  # one by one: one message per delivery
            sender(url).at_rate([d], 1.0)
        queue = cluster.settings.queue
        with cluster.client() as r:
            messages = r.lrange(queue, 0, -1)
            for message in messages:
                r.lpush(queue, message)
            queued = int(r.llen(queue))
        workers = [cluster.worker(f"w{i}", wait=False) for i in range(2)]
        for w in workers:
            wait_ready(w)
        cluster.supervise()
        # Copies of a route message are no-ops (the ledger admits a delivery once); wait until
        # the ledger is quiet, so a late copy would have run by the time runs are counted.
        task_ids = [json.loads(m)["headers"]["id"] for m in messages]

        def delivered() -> list[int]:
            with cluster.client() as r:
                counters = r.mget([cluster.keys.deliveries_of(t) for t in task_ids])
            return sorted(int(v or 0) for v in counters)

        # Read the delivery counters before they expire (2 x visibility timeout).
        drain(cluster, acked_keys(batch), 30, settle=lambda: delivered() == [2] * n)
        twice = delivered()
        account(row, cluster, batch)
        runs = Counter(r.key for r in cluster.store.runs())
        row.figures.update(
            messages_queued=queued,
            task_deliveries=twice,
            handler_runs_per_key=dict(Counter(runs.values())),
        )
        row.check(f"{n} messages, each queued twice", queued == 2 * n == 2 * len(messages))
        row.check("every message was delivered twice", twice == [2] * n, twice)
        row.check("the handler ran once per delivery", set(runs.values()) == {1}, runs)
    return row
