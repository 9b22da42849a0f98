"""bench/worker_patterns.py's latency rows: from the 202 (the sender's answer read) to the
handler's start, at fixed rates sent open-loop, beside bare Celery's ``delay()`` returning to its
task's start, with the worker running all along (start times from bench/stamps.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.backlog import clear_worker_state
from bench.bodies import verification_env, write_requests
from bench.common import BARE_QUEUE, OUR_QUEUE, log
from bench.loadgen import _requests
from bench.pattern_procs import KEEP, bare_worker, ingress, our_worker
from bench.pattern_senders import delay_at_rate, post_at_rate
from bench.probe import READY_KEY, RUNS_KEY
from bench.stamps import STARTED_KEY
from bench.workers import wait_ready
from harness.procs import spawn, stop

#: Seconds of open-loop sending per latency rate: 300 samples at 10/s, so its p99 is the third
#: slowest run rather than the slowest one (with 100 it was the maximum, one stall decided it).
LATENCY_SECONDS = {10: 30.0, 100: 4.0, 1000: 3.0}
#: Seconds of the warm-up pass at the first rate (both pool processes have run a message).
WARM_UP_SECONDS = 3.0


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {}

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0), "n": len(ordered)}


def _started(client: redis.Redis, names: dict[str, float], timeout: float = 15) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while client.hlen(STARTED_KEY) < len(names) and time.monotonic() < deadline:
        time.sleep(0.05)
    raw: dict[bytes, bytes] = client.hgetall(STARTED_KEY)  # type: ignore[assignment]
    return {k.decode(): float(v) for k, v in raw.items()}


def _latencies(answered: dict[str, float], started: dict[str, float]) -> dict[str, Any]:
    """Percentiles of the runs that started within the wait; ``missing`` counts the others (a
    worker that cannot keep up: its percentiles then understate its latency)."""
    out: dict[str, Any] = _percentiles(
        [started[k] - t for k, t in answered.items() if k in started]
    )
    out["missing"] = sum(1 for k in answered if k not in started)
    return out


def _at_rates(
    args: argparse.Namespace,
    client: redis.Redis,
    worker: tuple[list[str], dict[str, str]],
    log_path: Path,
    send: Callable[[int, int], dict[str, float]],
) -> dict[int, dict[str, Any]]:
    """Start a worker, then per rate: send(rate, count) and the latencies of what it sent."""
    out: dict[int, dict[str, Any]] = {}
    client.delete(READY_KEY)
    proc = spawn(*worker, log_path)
    try:
        wait_ready(client, proc, log_path)
        # The first pass warms the pool up; its figures are not kept.
        passes = [(args.rates[0], WARM_UP_SECONDS, False)]
        passes += [(rate, LATENCY_SECONDS.get(rate, 3.0), True) for rate in args.rates]
        for rate, seconds, kept in passes:
            client.delete(STARTED_KEY)
            answered = send(rate, max(1, int(rate * seconds)))
            if kept:
                out[rate] = _latencies(answered, _started(client, answered))
            else:
                _started(client, answered)
    finally:
        stop(proc)
    return out


def latency(
    args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path
) -> dict[str, Any]:
    rows: dict[str, Any] = {str(rate): {"rate": rate} for rate in args.rates}
    clear_worker_state(client, keep=KEEP)
    # Ours: ingress and worker running, deliveries posted at a fixed rate.
    with ingress(url, OUR_QUEUE, workdir) as port:

        def post(rate: int, count: int) -> dict[str, float]:
            path = workdir / f"latency-{rate}.txt"
            write_requests(path, uuid.uuid4().hex[:8], count, signed=bool(verification_env()))
            requests = _requests(str(path), f"127.0.0.1:{port}")
            return asyncio.run(post_at_rate(port, requests, rate))

        worker = our_worker(url, "bench.stamp_handler", args)
        ours = _at_rates(args, client, worker, workdir / "worker-latency-ours.log", post)
    # Bare Celery: its worker running, stamp.delay() at the same rates.
    os.environ["BENCH_REDIS_URL"] = url
    os.environ["BENCH_QUEUE"] = BARE_QUEUE
    worker = bare_worker(url, "bench.celery_stamp", args)
    bare = _at_rates(
        args, client, worker, workdir / "worker-latency-bare.log", lambda r, n: delay_at_rate(n, r)
    )
    for rate in args.rates:
        rows[str(rate)].update(ours=ours[rate], bare=bare[rate])
    for row in rows.values():
        ours, bare = row.get("ours", {}), row.get("bare", {})
        if ours.get("p99_ms") and bare.get("p99_ms"):
            row["p99_ratio"] = round(ours["p99_ms"] / bare["p99_ms"], 2)
        log(
            f"{row['rate']:>5}/s: ours p50 {ours.get('p50_ms')} p99 {ours.get('p99_ms')} ms; "
            f"bare p50 {bare.get('p50_ms')} p99 {bare.get('p99_ms')} ms"
        )
    client.delete(RUNS_KEY, STARTED_KEY)
    return rows
