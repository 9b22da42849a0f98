"""Workers beside bare Celery: a staged backlog drained, start-up excluded.

A backlog is put in a staging list, the worker is started and waits until ready, then the list is
renamed onto the queue it reads, and the clock runs until the queue and kombu's unacked set are
empty. Bare Celery no-op task vs our worker with one no-op handler, prefork -c2 and solo, with
our batches as the ingress formed them in the same run (and with one event per message). Then
every event must have exactly one handler run and one done marker. (bench/worker_patterns.py
measures the arrival patterns through the real ingress.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import redis

from bench.backlog import clear_worker_state, retarget, stage_bare, stage_ours
from bench.checks import batch_sizes, count_done, queued_batches, reset
from bench.common import BARE_QUEUE, OUR_QUEUE, WORKER_FLAGS, base_env, log
from bench.probe import READY_KEY, RUNS_KEY
from harness import commands, procfs, procs
from uphooks.settings import Settings

TEMPLATE = "bench-template-"  # staged worker backlogs, copied for each drain
POOLS = {"prefork -c2": ["--pool", "prefork", "-c", "2"], "solo": ["--pool", "solo"]}


def wait_ready(client: redis.Redis, proc: procs.Popen, log_path: Path) -> None:
    """Until the worker set the ready key (bench/probe.py), then a moment for its first read."""
    deadline = time.monotonic() + 60
    while not client.exists(READY_KEY):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.05)
    time.sleep(0.5)  # let it reach its blocking read


def drain(
    client: redis.Redis,
    args_: list[str],
    env: dict[str, str],
    staging: str,
    queue: str,
    events: int,
    workdir: Path,
    label: str,
) -> dict[str, Any]:
    """Start a worker on ``queue``, move the staged backlog onto it, time until all is acked."""
    client.delete(READY_KEY, RUNS_KEY)
    log_path = workdir / f"worker-{label}.log"
    proc = procs.spawn(args_, env, log_path)
    try:
        wait_ready(client, proc, log_path)
        pids = [proc.pid, *procfs.children(proc.pid)]
        t0 = time.perf_counter()
        client.rename(staging, queue)
        deadline = time.monotonic() + 600
        while client.llen(queue) or client.hlen("unacked"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {label} stopped draining; see {log_path}")
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        rss = {str(p): round(procfs.rss_kb(p) / 1024, 1) for p in pids}
        # Handler runs reach Redis within 0.1 s (bench/probe.py); wait for the stragglers.
        settle = time.monotonic() + 5
        while int(client.get(RUNS_KEY) or 0) < events and time.monotonic() < settle:
            time.sleep(0.05)
    finally:
        procs.stop(proc)
    runs = int(client.get(RUNS_KEY) or 0)
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1),
        "handler_runs": runs,
        "rss_mb": rss,
    }


def ingress_batch_size(report: dict[str, Any]) -> int:
    """The batch size group commit made under load in this run's ingress rounds: the backlog
    for our workers is staged with it, so they see what the ingress would hand them."""
    means = [
        row["batches"]["mean"]
        for r in report.get("ingress", {}).get("rounds", [])
        for name, row in r.items()
        if name == "ours" and row.get("batches")
    ]
    return round(statistics.median(means)) if means else Settings().enqueue_batch_max


def our_worker_env(url: str) -> dict[str, str]:
    return base_env(
        url,
        UPHOOKS_QUEUE=OUR_QUEUE,
        UPHOOKS_HANDLER_MODULES="bench.noop_handler",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
    )


def bench_workers(
    args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path
) -> dict[str, Any]:
    """Each backlog is staged once, then copied for each pool, so every drain gets the same."""
    results: dict[str, Any] = {}
    pools = {name: POOLS[name] for name in args.pools.split(",")}
    bare_cmd = commands.celery_worker("bench.celery_noop", *WORKER_FLAGS, "--loglevel", "WARNING")
    our_cmd = commands.worker(*WORKER_FLAGS, quiet=False)
    our_env = our_worker_env(url)
    cases = [
        ("bare", "bare Celery no-op task, one event per message", args.events),
        ("ours", f"our worker, {args.worker_batch} events per message", args.events),
        ("ours-batch1", "our worker, one event per message", args.events_batch1),
    ]
    cases = [c for c in cases if c[0] in args.worker_cases]
    reset(client)
    staged: dict[str, dict[str, Any]] = {}
    for case, _, events in cases:
        template = f"{TEMPLATE}{case}"
        t0 = time.perf_counter()
        if case == "bare":
            stage_bare(client, url, template, events)
            staged[case] = {"messages": events}
            retarget(client, template, BARE_QUEUE)
        else:
            batch_max = 1 if case == "ours-batch1" else args.worker_batch
            stage_ours(url, template, events, batch_max, args.connections)
            staged[case] = batch_sizes(queued_batches(client, template))
            retarget(client, template, OUR_QUEUE)
        staged[case]["staging_s"] = round(time.perf_counter() - t0, 2)
        log(f"staged {case}: {staged[case]}")
    for pool, pool_args in pools.items():
        for case, what, events in cases:
            clear_worker_state(client, keep=TEMPLATE)
            staging = f"bench-staging-{case}"
            client.copy(f"{TEMPLATE}{case}", staging)
            if case == "bare":
                cmd = [*bare_cmd, "-Q", BARE_QUEUE, *pool_args]
                env, queue = base_env(url, BENCH_QUEUE=BARE_QUEUE), BARE_QUEUE
            else:
                cmd, env, queue = [*our_cmd, *pool_args], our_env, OUR_QUEUE
            row = drain(client, cmd, env, staging, queue, events, workdir, f"{case}-{pool}")
            row["what"] = what
            row["staged"] = staged[case]
            if case != "bare":
                row["done_markers"] = count_done(client)
            ok = row["handler_runs"] == events and row.get("done_markers", events) == events
            row["each_event_once"] = ok
            results[f"{case} / {pool}"] = row
            log(
                f"workers {case:>11} {pool:<11}: {row['events_per_s']:8.0f} events/s "
                f"({events} in {row['seconds']} s)  runs {row['handler_runs']}  "
                f"markers {row.get('done_markers', '-')}"
            )
    for pool in pools:
        bare = results.get(f"bare / {pool}")
        for case in ("ours", "ours-batch1"):
            ours = results.get(f"{case} / {pool}")
            if bare and ours:
                ours["ratio_to_bare"] = round(ours["events_per_s"] / bare["events_per_s"], 2)
    return results
