"""2: pool children SIGKILLed mid-handler; 3: a whole worker SIGKILLed; 4: SIGTERM mid-handler."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chaos.holds import Hold
from chaos.keeper import Keeper, release_after
from chaos.load import Background, Delivery
from chaos.report import Row
from chaos.scenarios.base import Ctx, account, deliveries, sender, start_stack
from chaos.stack import Cluster, Proc, children_of, parent_of

HOLD = {"mode": "hold"}


def held_every(n: int) -> Callable[[int], dict[str, Any] | None]:
    return lambda i: HOLD if i % n == n // 2 else None


def _drain_deadline(cluster: Cluster) -> float:
    s = cluster.settings
    return s.visibility_timeout_seconds + s.restore_sweep_seconds + 40


def pool_child_killed(ctx: Ctx) -> Row:
    """Every ~1 s, a pool child holding an event (before its effect) is SIGKILLed."""
    rate, duration = ctx.fault_rate, ctx.pick(12, 6)
    row = Row("2", f"pool child SIGKILL mid-handler, every ~1s ({rate:.0f}/s)")
    with ctx.cluster("s2-child-kill") as cluster:
        url, _ = start_stack(cluster)
        batch = deliveries(int(rate * duration), "s2", held_every(10))
        killed_keys: set[str] = set()
        last_kill = [0.0]

        def decide(hold: Hold) -> str | None:
            # Each key is killed at most once, so no message dies often enough to count as poison.
            if hold.key not in killed_keys and time.time() - last_kill[0] > 1.0:
                killed_keys.add(hold.key)
                last_kill[0] = time.time()
                return "kill"
            return "release"

        with Keeper(cluster.holds, decide) as keeper:
            batch = Background(sender(url), "at_rate", batch, rate).start().join(duration + 120)
            row.recovery_s = account(
                row, cluster, batch, drain_s=_drain_deadline(cluster), killed=keeper.killed_at
            )
        row.figures.update(children_killed=len(keeper.killed), holds_released=keeper.released)
        row.check("pool children were killed mid-handler", len(keeper.killed) >= duration / 3)
        row.check("nothing dead-lettered", row.dlq == 0, row.dlq)
        lost = [line for p in cluster.procs for line in p.log_lines("WorkerLostError")]
        row.figures["worker_lost_log_lines"] = len(lost)
        row.evidence += lost[:2]
    return row


def _wait_for_hold_in(keeper: Keeper, worker: Proc, timeout: float) -> Hold | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for hold in keeper.current():
            if parent_of(hold.pid) == worker.pid:
                return hold
        time.sleep(0.01)
    return None


@dataclass
class _Caught:
    load: Background
    held: Hold | None  # the event worker A had in hand
    pids: list[int]  # A's pool children when it was caught
    frozen: set[int]

    def let_go(self) -> None:
        """A's holds are released again, after 0.2 s like everyone's."""
        self.frozen.clear()


@contextmanager
def _caught_holding(
    cluster: Cluster, url: str, a: Proc, batch: list[Delivery], rate: float, duration: float
) -> Iterator[_Caught]:
    """Send ``batch`` at ``rate``; 30% into ``duration`` worker A's holds stay held, so A surely
    has work in hand, and A is no longer supervised: once it is stopped, B must take over."""
    frozen: set[int] = set()

    def decide(hold: Hold) -> str | None:
        if parent_of(hold.pid) in frozen:
            return None
        return release_after(0.2)(hold)

    with Keeper(cluster.holds, decide) as keeper:
        load = Background(sender(url), "at_rate", batch, rate).start()
        time.sleep(duration * 0.3)
        frozen.add(a.pid)
        held = _wait_for_hold_in(keeper, a, 10)
        a.supervised = False
        yield _Caught(load, held, children_of(a.pid), frozen)


def whole_worker_killed(ctx: Ctx) -> Row:
    """Worker A (parent and children) SIGKILLed while it holds an event; worker B carries on."""
    rate, duration = ctx.fault_rate, ctx.pick(12, 8)
    row = Row("3", f"whole worker SIGKILL (process group) during load ({rate:.0f}/s)")
    with ctx.cluster("s3-worker-kill") as cluster:
        url, (a, _b) = start_stack(cluster)
        batch = deliveries(int(rate * duration), "s3", held_every(10))
        with _caught_holding(cluster, url, a, batch, rate, duration) as caught:
            a.signal_group(signal.SIGKILL)
            t_kill = time.time()
            a.popen.wait()
            batch = caught.load.join(duration + 120)
            killed = dict.fromkeys(caught.pids, t_kill)
            account(row, cluster, batch, drain_s=_drain_deadline(cluster), killed=killed)
        effects = cluster.store.effect_times()
        before = {d.key for d in batch if d.key and d.acked_at and d.acked_at < t_kill}
        stranded = {k for k in before if effects.get(k, t_kill) > t_kill + 2}
        last = max((effects[k] for k in before if k in effects), default=t_kill)
        row.recovery_s = round(last - t_kill, 1)
        s = cluster.settings
        bound = s.visibility_timeout_seconds + s.restore_sweep_seconds
        row.figures.update(
            held_by_killed_worker=caught.held.key if caught.held else None,
            stranded_then_restored=len(stranded),
            recovery_bound_s=f"visibility {s.visibility_timeout_seconds}s + sweep "
            f"{s.restore_sweep_seconds}s (+2s to process)",
        )
        row.check("the killed worker had an event in hand", caught.held is not None)
        row.check(
            "events the dead worker held were processed within visibility timeout + one sweep",
            row.recovery_s <= bound + 2,
            f"{row.recovery_s}s",
        )
    return row


def sigterm_mid_handler(ctx: Ctx, group: bool) -> Row:
    """SIGTERM to worker A (its main process, or its whole group) while a child runs a handler."""
    rate, duration = ctx.fault_rate, ctx.pick(10, 6)
    target = "process group" if group else "main process"
    row = Row("4b" if group else "4a", f"SIGTERM to a worker's {target} mid-handler")
    with ctx.cluster("s4b-sigterm-group" if group else "s4a-sigterm") as cluster:
        url, (a, _b) = start_stack(cluster)
        batch = deliveries(int(rate * duration), "s4", held_every(10))
        with _caught_holding(cluster, url, a, batch, rate, duration) as caught:
            if group:
                a.signal_group(signal.SIGTERM)
            else:
                a.popen.send_signal(signal.SIGTERM)
            t_term = time.time()
            time.sleep(1.0)  # the handler is still running when the shutdown begins
            caught.let_go()
            try:
                a.popen.wait(30)
                exit_s: float | None = round(time.time() - t_term, 1)
            except Exception:
                exit_s = None
            batch = caught.load.join(duration + 120)
            killed = dict.fromkeys(caught.pids, t_term)
            row.recovery_s = account(
                row, cluster, batch, drain_s=_drain_deadline(cluster), killed=killed
            )
        held_runs = cluster.store.runs(caught.held.key) if caught.held else []
        row.figures.update(
            worker_exit_after_s=exit_s,
            worker_exit_code=a.popen.returncode,
            held_event_runs=[r.outcome for r in held_runs],
        )
        row.check("worker A had a handler running at SIGTERM", caught.held is not None)
        row.check("worker A exited after SIGTERM", exit_s is not None)
        row.evidence += a.log_lines("shutdown", "Lost", "lost", "Restoring", "restor")[:6]
    return row


def sigterm_main(ctx: Ctx) -> Row:
    return sigterm_mid_handler(ctx, group=False)


def sigterm_group(ctx: Ctx) -> Row:
    return sigterm_mid_handler(ctx, group=True)
