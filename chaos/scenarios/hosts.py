"""17b: a worker host cut off from Redis (its network link down) in the middle of a handler.

Two hosts of our own (network namespaces, chaos/netns.py), one worker on each, one Redis on
this side reachable through both links; the ingress and the load stay on 127.0.0.1. Held events
(``hold`` for longer than the lease, shorter than the time limits) are handed out; once host A
runs some, its link goes down. Host B must finish A's pairs exactly once, within about a lease
time, and A's runs must never reach their effect: A cannot renew its leases, so it fences itself
(workers/leases.py) before they run out. The link then comes back and nothing runs again.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from chaos.keeper import Keeper
from chaos.load import Background, acked_keys
from chaos.netns import Host, available, hosts
from chaos.report import Row, check_runs, count, drain, quiesce
from chaos.scenarios.base import Ctx, deliveries, sender
from chaos.stack import Cluster, Proc, children_of, wait_ready
from uphooks_cli.embedded import RedisServer

#: Held this long unless released: longer than the lease (3 s), below the time limits below.
HOLD_S = 12.0
OVERRIDES: dict[str, object] = {
    "task_soft_time_limit_seconds": 20,
    "task_time_limit_seconds": 25,
    "visibility_timeout_seconds": 30,
}


class BoundRedis(RedisServer):
    """A RedisServer that also listens on the root side of each host's link."""

    def __init__(self, data_dir: Path, addresses: list[str]) -> None:
        super().__init__(data_dir)
        self.addresses = addresses

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index("--bind") + 1
        cmd[at] = " ".join(["127.0.0.1", *self.addresses])
        return [*cmd, "--protected-mode", "no"]


def gone(pid: int) -> bool:
    """Exited (a zombie its cut-off parent has not reaped yet counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def fence_times(proc: Proc) -> list[float]:
    """When the worker's processes fenced themselves (their CRITICAL log lines)."""
    out = []
    for line in proc.log.read_text(errors="replace").splitlines():
        if "no lease renewal reached Redis" in line and line.startswith("{"):
            with contextlib.suppress(ValueError, KeyError):
                out.append(datetime.fromisoformat(json.loads(line)["ts"]).timestamp())
    return out


def worker_on(cluster: Cluster, host: Host, port: int) -> Proc:
    url = f"redis://{host.root_ip}:{port}/0"
    args = [
        *host.prefix(),
        sys.executable,
        "-m",
        "uphooks_cli",
        "worker",
        "-n",
        f"{host.name}-{cluster.prefix}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    proc = Proc(host.name, args, cluster.env(url), cluster.root / f"{host.name}.log").spawn()
    proc.supervised = True
    cluster.procs.append(proc)
    return proc


def host_cut_mid_handler(ctx: Ctx) -> Row:
    row = Row("17b", "a worker host's link cut mid-handler (network namespaces)")
    missing = available()
    if missing:
        row.check("network namespaces can be made here", False, missing)
        return row
    n_before, n_held, n_after = int(ctx.pick(60, 30)), 8, int(ctx.pick(60, 30))
    rate = min(ctx.fault_rate, 20.0)
    with hosts(2) as (host_a, host_b):
        cluster = Cluster(ctx.out / "s17b-host-cut", overrides=OVERRIDES)
        cluster.redis_server = BoundRedis(cluster.root / "redis", [host_a.root_ip, host_b.root_ip])
        try:
            cluster.start_redis()
            port = cluster.redis_server.port
            wa, wb = worker_on(cluster, host_a, port), worker_on(cluster, host_b, port)
            url, _ = cluster.ingress()
            wait_ready(wa)
            wait_ready(wb)
            cluster.supervise()
            send = sender(url)
            batch = deliveries(n_before, "s17b-before")
            batch = Background(send, "at_rate", batch, rate).start().join(n_before / rate + 60)

            def on_a(pid: int) -> bool:
                return pid in children_of(wa.pid)

            # B's holds are let go at once; A's never: only a run that ignored losing its
            # lease could reach the effect (a duplicate).
            with Keeper(cluster.holds, lambda h: None if on_a(h.pid) else "release") as keeper:
                held = deliveries(n_held, "s17b-held", lambda i: {"mode": "hold", "s": HOLD_S})
                # One by one, so each is a message of its own and both hosts take some.
                loader = Background(send, "at_rate", held, 10.0).start()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not any(
                    on_a(h.pid) for h in keeper.current()
                ):
                    time.sleep(0.02)
                cut_on_a = [h for h in keeper.current() if on_a(h.pid)]
                row.check("host A was running held handlers", bool(cut_on_a), len(cut_on_a))
                t_cut = time.time()
                host_a.cut()
                held = loader.join(60)
                after = deliveries(n_after, "s17b-after")
                after = Background(send, "at_rate", after, rate).start().join(n_after / rate + 60)
                everything = batch + held + after
                acked = acked_keys(everything)
                row.recovery_s = drain(cluster, acked, 60)
                effects = cluster.store.effect_times()
                a_keys = {h.key for h in cut_on_a}
                takeover = [effects[k] - t_cut for k in a_keys if k in effects]
                a_pids = {h.pid for h in cut_on_a}
                fenced = [p for p in a_pids if gone(p)]
                fences = fence_times(wa)
                host_a.restore()
                # Host A's message stays unacknowledged until kombu restores it (visibility).
                quiesce(row, cluster, timeout_s=60)
            count(row, cluster, everything)
            check_runs(row, cluster, acked)
            runs = {k: cluster.store.runs(k) for k in a_keys}
            on_b = {k: [r for r in rs if r.outcome == "effect"] for k, rs in runs.items()}
            stuck_on_a = {k: [r for r in rs if r.pid in a_pids] for k, rs in runs.items()}
            row.figures.update(
                rate_per_s=rate,
                held_on_host_a_at_cut=len(a_keys),
                takeover_max_s=round(max(takeover), 1) if takeover else None,
                takeover_min_s=round(min(takeover), 1) if takeover else None,
                lease_s=cluster.settings.lease_seconds,
                fenced_processes_on_a=len(fenced),
                fenced_after_cut_s=[round(t - t_cut, 1) for t in fences],
                keeper_released_on_b=keeper.released,
            )
            row.check(
                "each pair cut off on host A took effect exactly once, on host B",
                all(len(v) == 1 and v[0].pid not in a_pids for v in on_b.values()),
                {k[-12:]: len(v) for k, v in on_b.items()},
            )
            row.check(
                "host A's runs of them never finished (fenced before their effect)",
                all(all(r.ended is None for r in v) for v in stuck_on_a.values()),
                [(r.pid, r.outcome) for v in stuck_on_a.values() for r in v][:4],
            )
            row.check(
                "host A fenced itself (its runs' processes are gone)",
                len(fenced) == len(a_pids),
                f"{len(fenced)} of {len(a_pids)}",
            )
            row.check(
                "host A fenced before host B took over",
                bool(fences) and bool(takeover) and max(fences) < t_cut + min(takeover),
                f"fenced {[round(t - t_cut, 1) for t in fences]}s, B's first effect "
                f"{takeover and round(min(takeover), 1)}s after the cut",
            )
            lease = cluster.settings.lease_seconds
            row.check(
                "taken over within about a lease time (lease + 3 s)",
                bool(takeover) and max(takeover) <= lease + 3,
                takeover and round(max(takeover), 1),
            )
            row.check("nothing dead-lettered", row.dlq == 0, row.dlq)
        finally:
            cluster.stop()
    return row
