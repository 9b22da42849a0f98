"""11b: Redis driven to its maxmemory under load (noeviction): 503s before any refused write.

Redis gets a small ``maxmemory`` and is filled to 85% with filler keys of the scenario's own;
then deliveries with ~4 KB bodies arrive at a fixed rate through the real ingress and workers
(each handler run takes 100 ms, so a backlog builds), the ingress's limit
(UPHOOKS_REDIS_MEMORY_LIMIT_RATIO, 90%) is crossed within seconds, and the rest of the load is
answered 503 while the workers drain the backlog. Once the ingress has refused for a while
(timed from when Redis passed the limit, so a slow machine does not change the story) the
filler is deleted, as added memory or an expiring window would free it, and the sender's
retries are taken.

Checked: 503s appeared; Redis refused no write at any time (``errorstat_OOM`` in INFO errorstats
stays absent; Redis lists an error type once it happened); no worker logged an OOM; the workers
kept taking effect while the ingress refused; every delivery was acknowledged in the end and
every acknowledged one took effect once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson

from chaos.load import Background, Delivery, acked_keys, event_body
from chaos.report import Row, count, drain
from chaos.scenarios.base import Ctx, sender, settle_queue, start_stack
from chaos.stack import Cluster

MAXMEMORY = 64 * 2**20
FILL_TO = 0.85  # share of maxmemory the filler takes before the load starts
FILLER = "chaos-filler:"
PAD = 4000  # bytes of caption per delivery


@dataclass
class MemoryWatch:
    """INFO memory and errorstats every 0.2 s in a thread: (time, used_memory, OOM errors)."""

    cluster: Cluster
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.cluster.client() as r:
            while not self._stop.wait(0.2):
                used = int(r.info("memory")["used_memory"])
                self.samples.append((time.time(), used, oom_errors(r.info("errorstats"))))

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def oom_errors(errorstats: dict[str, dict[str, int]]) -> int:
    return int(errorstats.get("errorstat_OOM", {}).get("count", 0))


def padded(n: int, run: str) -> Delivery:
    ident = f"chaos-{run}-{n}"
    body = orjson.loads(event_body(ident, {"mode": "sleep", "s": 0.1})) | {"caption": "m" * PAD}
    return Delivery(ident, orjson.dumps(body))


def past_the_limit(cluster: Cluster) -> bool:
    """Redis is above the ingress's limit: from its next reading on, the ingress refuses."""
    ratio = cluster.settings.redis_memory_limit_ratio
    with cluster.client() as r:
        return int(r.info("memory")["used_memory"]) >= ratio * MAXMEMORY


def backlog(cluster: Cluster) -> int:
    """Messages queued or held by workers."""
    with cluster.client() as r:
        return int(r.llen(cluster.settings.queue)) + int(r.hlen("unacked"))


def fill(cluster: Cluster, target: int) -> int:
    """Filler keys (100 KB each) until used_memory reaches ``target``; how many were written."""
    n = 0
    with cluster.client() as r:
        while int(r.info("memory")["used_memory"]) < target:
            pipe = r.pipeline(transaction=False)
            for _ in range(10):
                pipe.set(f"{FILLER}{n}", b"f" * 100_000)
                n += 1
            pipe.execute()
    return n


def redis_near_full(ctx: Ctx) -> Row:
    rate, duration, hold_s = ctx.pick(200, 100), 12, ctx.pick(10, 5)
    row = Row("11b", f"Redis at maxmemory {MAXMEMORY >> 20} MB, {rate}/s of 4 KB events")
    with ctx.cluster("s11b-redis-near-full", appendfsync="everysec") as cluster:
        with cluster.client() as r:
            r.config_set("maxmemory", MAXMEMORY)
        fillers = fill(cluster, int(FILL_TO * MAXMEMORY))
        url, _ = start_stack(cluster)
        batch = [padded(i, "s11b") for i in range(int(rate * duration))]
        # A patient sender, as the real one (it retries for hours): slow retries, long horizon.
        patient = sender(url, give_up_s=300, max_backoff_s=8.0, max_connections=200)
        with MemoryWatch(cluster) as watch:
            t_load = time.time()
            load = Background(patient, "at_rate", batch, float(rate)).start()
            deadline = time.time() + duration + 120
            while not past_the_limit(cluster) and time.time() < deadline:
                time.sleep(0.2)
            row.figures["backlog_when_full"] = backlog(cluster)
            with cluster.client() as r:
                info = r.info("memory")
            # What besides keys held memory then (client buffers, the AOF buffer).
            row.figures["when_full_mb"] = {
                name: round(int(info[name]) / 2**20, 1)
                for name in ("used_memory_dataset", "mem_clients_normal", "mem_aof_buffer")
            }
            time.sleep(hold_s)
            effects_before_free = len(cluster.store.effect_times())
            with cluster.client() as r:
                for first in range(0, fillers, 500):
                    r.delete(*[f"{FILLER}{i}" for i in range(first, min(first + 500, fillers))])
            t_free = time.time()
            batch = load.join(360)
            drain(cluster, acked_keys(batch), 240, settle=settle_queue(cluster))
        count(row, cluster, batch)
        _checks(row, cluster, batch, watch, t_load, t_free, effects_before_free)
    return row


def _checks(
    row: Row,
    cluster: Cluster,
    batch: list[Delivery],
    watch: MemoryWatch,
    t_load: float,
    t_free: float,
    effects_before_free: int,
) -> None:
    attempts = [a for d in batch for a in d.attempts]
    refused = sorted(a.end for a in attempts if a.status == 503)
    statuses = Counter(str(a.status or "error") for a in attempts)
    samples = watch.samples
    peak = max((used for _, used, _ in samples), default=0)
    ooms = max((n for _, _, n in samples), default=0)
    effects = cluster.store.effect_times()
    first_503 = refused[0] if refused else None
    # Effects taken while the ingress was refusing: the workers kept draining.
    drained_while_full = sum(1 for at in effects.values() if first_503 and first_503 <= at < t_free)
    after_free = [a.end for a in attempts if a.status == 202 and a.start >= t_free]
    used_at_503 = [used for t, used, _ in samples if first_503 and t <= first_503]
    row.figures.update(
        answers=dict(sorted(statuses.items())),
        first_503_after_s=round(first_503 - t_load, 1) if first_503 else None,
        used_at_first_503=f"{used_at_503[-1] / MAXMEMORY:.1%}" if used_at_503 else None,
        peak_used=f"{peak / MAXMEMORY:.1%} of maxmemory",
        errorstat_oom=ooms,
        effects_while_refusing=drained_while_full,
        effects_before_memory_freed=effects_before_free,
        first_202_after_free_s=round(min(after_free) - t_free, 1) if after_free else None,
        acked_after_free=sum(1 for d in batch if d.acked_at and d.acked_at >= t_free),
    )
    row.recovery_s = row.figures["first_202_after_free_s"]
    row.check("503s answered once Redis neared maxmemory", bool(refused), len(refused))
    row.check("Redis refused no write (errorstat_OOM stays 0)", ooms == 0, ooms)
    row.check("Redis stayed below maxmemory", peak < MAXMEMORY, row.figures["peak_used"])
    if row.figures["backlog_when_full"]:
        row.check("the workers kept draining while the ingress refused", drained_while_full > 0)
    row.check("the ingress took deliveries again once memory was freed", bool(after_free))
    gave_up = [d.delivery_id for d in batch if not d.acked]
    row.check("every delivery acknowledged in the end (sender retries)", not gave_up, len(gave_up))
    needles = ("OutOfMemoryError", "OOM command not allowed", "for lack of memory")
    oom_lines = [line for p in cluster.procs for line in p.log_lines(*needles)]
    row.check("no process logged a refused write", not oom_lines, len(oom_lines))
    row.evidence += oom_lines[:5]
