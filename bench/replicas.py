"""What ``UPHOOKS_ACK_REPLICAS`` costs: ack latency and throughput with N=0, 1 (and 2), one run.

A master with two replicas on 127.0.0.1 (appendfsync always on each, as deploy/ runs them), the
ingress (``uphooks serve``, one process) pointed at the master, and a load client of its own
process (chaos/load.py's sender, unsigned, ``UPHOOKS_VERIFY=none``): one sender back to back
(latency alone) and 32 at once (throughput). Rounds are interleaved (N=0, N=1, N=2, N=0, ...)
and each figure is the median of its rounds; the ratios to N=0 are the point, as the machine is
shared. ``python -m bench.replicas [--rounds 2] [--duration 5]``; about 1.5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from chaos.load import Background, Sender, percentile
from chaos.sentinels import ReplicatedRedis
from harness import commands, procs, wait
from uphooks_cli.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def ingress(redis_url: str, replicas: int, workdir: Path) -> Any:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "UPHOOKS_REDIS_URL": redis_url,
        "UPHOOKS_VERIFY": "none",
        "UPHOOKS_ACK_REPLICAS": str(replicas),
        "UPHOOKS_KEY_PREFIX": f"benchrep{replicas}",
        "UPHOOKS_QUEUE": f"benchrep{replicas}-q",
        "UPHOOKS_ADMIN_PORT": "0",
        "UPHOOKS_LOG_LEVEL": "WARNING",
        "UPHOOKS_MAX_CONNECTIONS_PER_SOURCE": "4096",
    }
    log = workdir / f"ingress-{port}.log"
    proc = procs.spawn(commands.serve(port), env, log)
    try:
        wait.until_listening(proc, port, log, what="ingress")
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(proc)


def one_round(url: str, concurrency: int, duration: float, tag: str) -> dict[str, float]:
    sender = Sender(url, secret=None, give_up_s=30)
    done = Background(sender, "closed_loop", tag, concurrency, duration).start()
    batch = done.join(duration + 120)
    lat = [x for d in batch if (x := d.ack_latency) is not None]
    acked = [d for d in batch if d.acked]
    return {
        "acked": len(acked),
        "not_acked": len(batch) - len(acked),
        "per_s": len(acked) / duration,
        "p50_ms": (percentile(lat, 50) or 0) * 1000,
        "p99_ms": (percentile(lat, 99) or 0) * 1000,
    }


def wait_cost(port: int, replicas: list[int], count: int = 2000) -> dict[int, dict[str, float]]:
    """The round trip alone: a 600-byte write, then ``WAIT n`` on the same connection, one at a
    time, interleaved by n; microseconds per write (p50, p99). Less noisy than HTTP figures."""
    value = b"x" * 600
    times: dict[int, list[float]] = {n: [] for n in replicas}
    with redis.Redis(port=port) as r:
        for i in range(count):
            n = replicas[i % len(replicas)]
            t = time.perf_counter()
            r.set(f"benchwait:{i}", value, ex=60)
            if n:
                confirmed = r.execute_command("WAIT", n, 1000)
                assert int(confirmed) >= n, f"WAIT {n} confirmed {confirmed}"
            times[n].append(time.perf_counter() - t)
    return {
        n: {"p50_us": (percentile(v, 50) or 0) * 1e6, "p99_us": (percentile(v, 99) or 0) * 1e6}
        for n, v in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--replicas", default="0,1,2", help="values of UPHOOKS_ACK_REPLICAS")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    ns = [int(x) for x in args.replicas.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    results: dict[tuple[int, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        workdir = Path(tmp)
        group = ReplicatedRedis(workdir / "redis", replicas=max(ns), sentinels=0).start()
        try:
            url_redis = f"redis://127.0.0.1:{group.master.port}/0"
            waits = wait_cost(group.master.port, ns)
            for r in range(args.rounds):
                for n in ns:
                    with ingress(url_redis, n, workdir) as url:
                        for c in levels:
                            tag = f"r{r}n{n}c{c}-{time.time_ns()}"
                            results.setdefault((n, c), []).append(
                                one_round(url, c, args.duration, tag)
                            )
        finally:
            group.stop()
    load = os.getloadavg()
    print(f"ack replicas: {args.rounds} round(s) x {args.duration:.0f}s, load {load[0]:.1f}")
    print("| N | senders | acks/s | x N=0 | p50 ms | x N=0 | p99 ms | x N=0 | not acked |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table = []
    for c in levels:
        base = {k: statistics.median(x[k] for x in results[(0, c)]) for k in results[(0, c)][0]}
        for n in ns:
            med = {k: statistics.median(x[k] for x in results[(n, c)]) for k in base}
            row = {"n": n, "senders": c, **{k: round(v, 2) for k, v in med.items()}}
            table.append(row)
            print(
                f"| {n} | {c} | {med['per_s']:.0f} | {med['per_s'] / base['per_s']:.2f} | "
                f"{med['p50_ms']:.1f} | {med['p50_ms'] / base['p50_ms']:.2f} | "
                f"{med['p99_ms']:.1f} | {med['p99_ms'] / base['p99_ms']:.2f} | "
                f"{med['not_acked']:.0f} |"
            )
    print()
    print("| N | write (+ WAIT N) p50 us | x N=0 | p99 us | x N=0 |")
    print("|---:|---:|---:|---:|---:|")
    for n in ns:
        w, b = waits[n], waits[ns[0]]
        print(
            f"| {n} | {w['p50_us']:.0f} | {w['p50_us'] / b['p50_us']:.2f} | "
            f"{w['p99_us']:.0f} | {w['p99_us'] / b['p99_us']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": table, "wait": waits, "load": load}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
