"""bench/worker_patterns.py's latency rows: from the 202 (the sender's answer read) to the
handler's start, at fixed rates sent open-loop, beside bare Celery's ``delay()`` returning to its
task's start, both workers running all along and each rate's events sent in blocks, ours and
bare Celery's in turn (``BLOCKS``), so a change of load on a shared machine falls on both sides
alike (start times from bench/stamps.py).

A third side, ``claim``, is bare Celery whose task first makes one durable claim (``SET NX``,
bench/celery_stamp.py ``claimed``): the floor of running each event once on Celery and Redis,
which bare Celery (at least once) does not pay. Its p99 over bare Celery's says how much of goal
4's "p99 no worse than bare Celery's" the claim alone takes."""

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
from harness.procs import Popen, spawn, stop

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


#: Blocks each rate's events are sent in, ours and bare Celery's alternately, so a change of
#: the machine's load during a run falls on both sides alike. 1,000/s is one block: bare Celery
#: cannot keep up with it, and its backlog would still be draining under our next block.
BLOCKS = {10: 6, 100: 2, 1000: 1}

#: send(rate, count): when each event was answered (the 202, or ``delay()`` returning), by name.
Send = Callable[[int, int], dict[str, float]]

#: The highest rate the ``claim`` side runs at: above it neither bare Celery side keeps up, and
#: its backlog would cost the run time and tell nothing.
CLAIM_MAX_RATE = 100


def _started_worker(
    client: redis.Redis, worker: tuple[list[str], dict[str, str]], log_path: Path
) -> Popen:
    client.delete(READY_KEY)
    proc = spawn(*worker, log_path)
    try:
        wait_ready(client, proc, log_path)
    except BaseException:
        stop(proc)
        raise
    return proc


def _alternating(
    args: argparse.Namespace,
    client: redis.Redis,
    sides: dict[str, Send],
    max_rate: dict[str, int],
) -> dict[str, dict[int, dict[str, Any]]]:
    """Per rate, its events in blocks, each block sent by each side in turn, the first side
    changing from block to block (each waits until what it sent has started); the latencies of
    each side over all its blocks (a side named in ``max_rate`` only up to that rate). The first
    pass, at the first rate, warms both pools up and is not kept."""
    out: dict[str, dict[int, dict[str, Any]]] = {side: {} for side in sides}
    passes = [(args.rates[0], WARM_UP_SECONDS, False)]
    passes += [(rate, LATENCY_SECONDS.get(rate, 3.0), True) for rate in args.rates]
    for rate, seconds, kept in passes:
        blocks = BLOCKS.get(rate, 1) if kept else 1
        count = max(1, int(rate * seconds / blocks))
        answered: dict[str, dict[str, float]] = {side: {} for side in sides}
        started: dict[str, dict[str, float]] = {side: {} for side in sides}
        for block in range(blocks):
            order = [(s, send) for s, send in sides.items() if rate <= max_rate.get(s, rate)]
            for side, send in order[::-1] if block % 2 else order:  # neither always first
                client.delete(STARTED_KEY)
                sent = send(rate, count)
                answered[side].update(sent)
                started[side].update(_started(client, sent))
        if kept:
            for side in answered:
                if answered[side]:
                    out[side][rate] = _latencies(answered[side], started[side])
    return out


def latency(
    args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path
) -> dict[str, Any]:
    rows: dict[str, Any] = {str(rate): {"rate": rate} for rate in args.rates}
    clear_worker_state(client, keep=KEEP)
    # Ours: ingress and worker running, deliveries posted at a fixed rate. Bare Celery: its
    # worker running, stamp.delay() at the same rates. Both workers run all along.
    os.environ["BENCH_REDIS_URL"] = url
    os.environ["BENCH_QUEUE"] = BARE_QUEUE
    with ingress(url, OUR_QUEUE, workdir) as port:

        def post(rate: int, count: int) -> dict[str, float]:
            path = workdir / f"latency-{rate}-{uuid.uuid4().hex[:6]}.txt"
            write_requests(path, uuid.uuid4().hex[:8], count, signed=bool(verification_env()))
            requests = _requests(str(path), f"127.0.0.1:{port}")
            return asyncio.run(post_at_rate(port, requests, rate))

        def delay(rate: int, count: int) -> dict[str, float]:
            return delay_at_rate(count, rate)

        def delay_claimed(rate: int, count: int) -> dict[str, float]:
            return delay_at_rate(count, rate, claim=True)

        ours_log = workdir / "worker-latency-ours.log"
        bare_log = workdir / "worker-latency-bare.log"
        ours_proc = _started_worker(client, our_worker(url, "bench.stamp_handler", args), ours_log)
        try:
            bare_proc = _started_worker(
                client, bare_worker(url, "bench.celery_stamp", args), bare_log
            )
            try:
                sides: dict[str, Send] = {"ours": post, "bare": delay, "claim": delay_claimed}
                got = _alternating(args, client, sides, {"claim": CLAIM_MAX_RATE})
            finally:
                stop(bare_proc)
        finally:
            stop(ours_proc)
    for rate in args.rates:
        rows[str(rate)].update({side: got[side][rate] for side in got if rate in got[side]})
    for row in rows.values():
        ours, bare, claim = row.get("ours", {}), row.get("bare", {}), row.get("claim", {})
        if ours.get("p99_ms") and bare.get("p99_ms"):
            row["p99_ratio"] = round(ours["p99_ms"] / bare["p99_ms"], 2)
        if claim.get("p99_ms") and bare.get("p99_ms"):
            row["claim_p99_ratio"] = round(claim["p99_ms"] / bare["p99_ms"], 2)
            row["ours_over_claim_p99"] = round(ours.get("p99_ms", 0) / claim["p99_ms"], 2)
        log(
            f"{row['rate']:>5}/s: ours p50 {ours.get('p50_ms')} p99 {ours.get('p99_ms')} ms; "
            f"bare p50 {bare.get('p50_ms')} p99 {bare.get('p99_ms')} ms; "
            f"bare + claim p50 {claim.get('p50_ms')} p99 {claim.get('p99_ms')} ms"
        )
    client.delete(RUNS_KEY, STARTED_KEY, *client.keys("bench:claim:*"))
    return rows
