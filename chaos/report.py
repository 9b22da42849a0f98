"""Counting one scenario from the sender's side to the handler's side effect, and printing it.

- sent: distinct deliveries the load client tried;
- acked: deliveries the ingress answered 2xx (at any attempt);
- processed: acknowledged deliveries with an effect row;
- dup: runs that applied an effect the pipeline had promised not to run again (the done marker
  was set, or another live run held the lease): "took effect twice". Fails the run;
- reruns: effect attempts refused by the UNIQUE key (at-least-once re-execution after a crash,
  before the done marker was written). Absorbed by the idempotency key; reported, not failed;
- dlq: acknowledged deliveries dead-lettered (``<prefix>:dlq``);
- lost: acknowledged, no effect row by the drain deadline, and not dead-lettered. Fails the run.

And per (delivery, handler) pair, the handler's **runs** (:func:`check_runs`): after the ledger
went quiet (:func:`quiesce`: nothing scheduled, queued or unacknowledged, so no copy can come
any more), each pair must have run exactly as often as its expected attempts, plus only the
runs the harness itself interrupted.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.effects import Run
from chaos.load import Delivery, acked_keys, percentile
from chaos.stack import Cluster


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Row:
    scenario: str
    title: str
    sent: int = 0
    acked: int = 0
    processed: int = 0
    dup: int = 0
    reruns: int = 0
    dlq: int = 0
    lost: int = 0
    recovery_s: float | None = None
    p99_ack_ms: float | None = None
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.dup == 0 and all(c.ok for c in self.checks)

    def check(self, what: str, ok: bool, detail: object = "") -> bool:
        self.checks.append(Check(what, bool(ok), str(detail)))
        return bool(ok)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def drain(
    cluster: Cluster,
    acked: set[str],
    deadline_s: float,
    *,
    settle: Callable[[], bool] | None = None,
) -> float | None:
    """Wait until every acknowledged key has an effect or a dead letter; the time it took."""
    start = time.time()
    while True:
        done = set(cluster.store.effect_times()) | cluster.dead_lettered()
        if acked <= done and (settle is None or settle()):
            return time.time() - start
        if time.time() - start > deadline_s:
            return None
        time.sleep(0.2)


def quiesce(row: Row, cluster: Cluster, timeout_s: float | None = None) -> float | None:
    """Wait until no copy of any message can come any more: nothing in the ledger's schedule,
    the queue or kombu's unacknowledged set; then one lease more, for a copy already taken.
    Checked (a schedule that never empties is a finding); returns the seconds it took."""
    s = cluster.settings
    if timeout_s is None:
        timeout_s = s.lease_seconds + 4 * s.recover_after_seconds + 10
    start = time.time()
    left = (0, 0, 0)
    while time.time() - start < timeout_s:
        with cluster.client() as r:
            pipe = r.pipeline(transaction=False)
            pipe.zcard(cluster.keys.due)
            pipe.llen(s.queue)
            pipe.hlen("unacked")
            left = tuple(int(v) for v in pipe.execute())  # type: ignore[assignment]
        if left == (0, 0, 0):
            time.sleep(s.lease_seconds + 1)
            took = round(time.time() - start, 1)
            row.figures["quiet_after_s"] = took
            return took
        time.sleep(0.2)
    row.check(
        "the ledger went quiet (nothing scheduled, queued or unacknowledged)",
        False,
        f"after {timeout_s:.0f}s: due={left[0]} queue={left[1]} unacked={left[2]}",
    )
    return None


#: A run this long before its process was killed may not have had its outcome recorded yet:
#: the worker records the outcomes of one message's pairs together, after running them all
#: (bounded by the task time limit, 5 s in the harness).
KILL_WINDOW_S = 5.0


def check_runs(
    row: Row,
    cluster: Cluster,
    keys: Collection[str],
    expected: Callable[[str], int] = lambda key: 1,
    killed: Mapping[int, float] | None = None,
) -> list[str]:
    """Runs per pair == expected attempts, after :func:`quiesce`. Runs the harness caused are
    excused and counted apart: one killed mid-run (never ended), and a run that found the effect
    applied (``dup``) right after one whose process the harness killed (``killed``: pid -> when)
    within ``KILL_WINDOW_S`` after its effect, before the rerun started: killed after the
    effect, before its outcome was recorded (at-least-once; the idempotency key absorbs it).
    Returns the keys that ran a wrong number of times."""
    by_key: dict[str, list[Run]] = defaultdict(list)
    for run in cluster.store.runs():
        by_key[run.key].append(run)
    kills = dict(killed or {})
    shapes: Counter[int] = Counter()
    wrong: list[str] = []
    interrupted = rerun_after_kill = 0
    for key in keys:
        runs = by_key.get(key, [])
        cut = sum(1 for r in runs if r.ended is None)
        again = sum(
            1
            for r, after in itertools.pairwise(runs)
            if r.outcome in ("effect", "dup")
            and after.outcome == "dup"
            and r.ended is not None
            and r.pid in kills
            and r.ended <= kills[r.pid] <= min(r.ended + KILL_WINDOW_S, after.started)
        )
        interrupted += cut
        rerun_after_kill += again
        counted = len(runs) - cut - again
        shapes[counted] += 1
        if counted != expected(key):
            wrong.append(key)
    row.figures["runs_per_pair"] = dict(sorted(shapes.items()))
    if interrupted or rerun_after_kill:
        row.figures["runs_interrupted_by_harness"] = interrupted
        row.figures["reruns_after_a_kill_before_settle"] = rerun_after_kill
    row.check(
        "every pair ran exactly its expected attempts (runs counted, not effects)",
        not wrong,
        f"{len(wrong)} pairs, e.g. "
        + "; ".join(
            f"{k}: expected {expected(k)}, ran "
            + " ".join(f"{r.attempt}:{r.outcome}:{r.pid}" for r in by_key.get(k, []))
            for k in wrong[:3]
        ),
    )
    return wrong


def count(row: Row, cluster: Cluster, deliveries: Iterable[Delivery]) -> None:
    """Fill the counting columns of ``row`` from the sender's record and the effect store."""
    deliveries = list(deliveries)
    acked = acked_keys(deliveries)
    effects = set(cluster.store.effect_times())
    dead = cluster.dead_lettered()
    row.sent = len({d.delivery_id for d in deliveries})
    row.acked = len(acked)
    row.processed = len(acked & effects)
    row.dlq = len(acked & dead)
    lost = sorted(acked - effects - dead)
    row.lost = len(lost)
    for key in lost[:5]:
        row.evidence.append("lost " + cluster.locate(key))
        row.evidence.append(cluster.aof_trail(key))
    crashes = cluster.crashes()
    row.check(
        "no worker process crashed (the harness restarts one, as systemd would)",
        not crashes,
        len(crashes),
    )
    row.evidence += crashes[:3]
    violations = cluster.store.violations()
    row.dup = len({v.key for v in violations})
    for v in violations[:10]:
        row.evidence.append(f"dup: {v.key} attempt {v.attempt} pid {v.pid}: {v.note}")
    row.reruns = sum(cluster.store.dup_keys().values())
    latencies = [lat for d in deliveries if (lat := d.ack_latency) is not None]
    p99 = percentile(latencies, 99)
    row.p99_ack_ms = None if p99 is None else round(p99 * 1000, 1)
    lag = [
        d.attempts[0].start - d.scheduled_at for d in deliveries if d.scheduled_at and d.attempts
    ]
    p99_lag = percentile(lag, 99)
    if p99_lag is not None:
        row.figures["sender_lag_p99_ms"] = round(p99_lag * 1000, 1)
    gave_up = [d.delivery_id for d in deliveries if not d.acked and d.final_status is None]
    final_4xx = [(d.delivery_id, d.final_status) for d in deliveries if d.final_status is not None]
    if gave_up:
        row.figures["sender_gave_up"] = len(gave_up)
    if final_4xx:
        row.figures["final_4xx"] = len(final_4xx)
    row.check("no final 4xx answer to a valid delivery", not final_4xx, final_4xx[:5])


HEADER = (
    f"{'scenario':<44} {'sent':>6} {'acked':>6} {'proc':>6} {'dup':>4} {'rerun':>5} "
    f"{'dlq':>4} {'lost':>5} {'recovery':>9} {'p99 ack':>9}  result"
)


def _fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f}{unit}"


def table_line(row: Row) -> str:
    title = f"{row.scenario} {row.title}"[:44]
    return (
        f"{title:<44} {row.sent:>6} {row.acked:>6} {row.processed:>6} {row.dup:>4} "
        f"{row.reruns:>5} {row.dlq:>4} {row.lost:>5} {_fmt(row.recovery_s, 's'):>9} "
        f"{_fmt(row.p99_ack_ms, 'ms'):>9}  {'ok' if row.ok else 'FAIL'}"
    )


def details(row: Row) -> list[str]:
    lines = [f"  {k}: {v}" for k, v in row.figures.items()]
    for c in row.checks:
        if not c.ok:
            lines.append(f"  FAILED: {c.what}: {c.detail}")
    lines += [f"  evidence: {e}" for e in row.evidence]
    return lines


def markdown(rows: list[Row]) -> str:
    """The table for docs/reliability.md."""
    out = [
        "| # | scenario | sent | acked | processed | dup | reruns | dead-lettered | lost "
        "| recovery | p99 ack | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        failed = [c.what for c in r.checks if not c.ok]
        failed += [f"{r.lost} lost"] if r.lost else []
        failed += [f"{r.dup} took effect twice"] if r.dup else []
        result = "ok" if r.ok else f"**FAIL**: {'; '.join(failed)}"
        out.append(
            f"| {r.scenario} | {r.title} | {r.sent} | {r.acked} | {r.processed} | {r.dup} "
            f"| {r.reruns} | {r.dlq} | {r.lost} | {_fmt(r.recovery_s, ' s')} "
            f"| {_fmt(r.p99_ack_ms, ' ms')} | {result} |"
        )
    return "\n".join(out) + "\n"


def write_json(path: str, rows: list[Row], meta: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"meta": meta, "rows": [r.as_dict() for r in rows]}, out, indent=2)
