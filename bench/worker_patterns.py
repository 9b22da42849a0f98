"""``python -m bench.worker_patterns``: our workers beside bare Celery at each arrival pattern.

Issue 14, goals 1 and 4, in one run (ratios only count within a run):

- **Throughput by arrival pattern.** For 1, 4, 16 and 64 concurrent senders: the senders POST
  ``--events`` signed deliveries to the real ingress (``uphooks serve``, the Procfile command),
  each waiting for its answer before the next, so the ingress forms its batches as it really
  does (one sender: one delivery per Celery message). Then ``uphooks worker`` with one counting
  handler (bench/noop_handler.py) drains them. Beside it, the same number of threads ``delay()``
  as many bare Celery no-op tasks (bench/celery_noop.py) and a bare Celery worker drains those.
  Both backlogs are moved onto the worker's queue only once it is ready (bench/run.py's
  ``drain``); the clock runs until the queue and kombu's unacknowledged set are empty. Same pool
  and worker options on both sides (``--pool``, ``--worker-args``); each event must have run
  exactly once (and, for ours, have its done marker).
- **Latency** from the 202 (the sender's answer read) to the handler's start, at 10, 100 and
  1,000 events/s sent open-loop (at fixed times, whatever the answers), beside bare Celery's
  ``delay()`` returning to its task's start, with the worker running all along
  (bench/stamp_handler.py, bench/celery_stamp.py note the start times).

Bounded: ~2-3 minutes with the defaults. Results: a table, and JSON in bench/results/.

This module runs the throughput rows and reports; the processes are bench/pattern_procs.py's,
the senders bench/pattern_senders.py's, the latency rows bench/pattern_latency.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.common import BARE_QUEUE, OUR_QUEUE, finish
from bench.loadgen import _requests
from bench.pattern_latency import latency
from bench.pattern_procs import KEEP, bare_worker, ingress, our_worker
from bench.pattern_senders import delay_all, post_all
from bench.run import (
    batch_sizes,
    clear_worker_state,
    count_done,
    drain,
    log,
    queued_batches,
    reset,
    retarget,
    verification_env,
    write_requests,
)
from uphooks_cli.embedded import RedisServer

# -- throughput -----------------------------------------------------------------------------


def throughput(
    args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    os.environ["BENCH_REDIS_URL"] = url  # bench.celery_noop reads it on import
    staging = f"{KEEP}staging"
    with ingress(url, staging, workdir) as port:
        for senders in args.senders:
            row: dict[str, Any] = {"senders": senders, "events": args.events}
            # Ours: the real ingress forms the messages, then our worker drains them.
            clear_worker_state(client, keep=KEEP)
            tag = f"s{senders:03d}{uuid.uuid4().hex[:4]}"
            path = workdir / f"requests-{senders}.txt"
            write_requests(path, tag, args.events, signed=bool(verification_env()))
            requests = _requests(str(path), f"127.0.0.1:{port}")
            keys, took = asyncio.run(post_all(port, requests, senders))
            row["ours_sent_per_s"] = round(len(keys) / took, 1)
            row["batches"] = batch_sizes(queued_batches(client, staging))
            retarget(client, staging, OUR_QUEUE)
            cmd, env = our_worker(url, "bench.noop_handler", args)
            ours = drain(
                client, cmd, env, staging, OUR_QUEUE, len(keys), workdir, f"ours-{senders}"
            )
            ours["done_markers"] = count_done(client)
            ours["each_event_once"] = ours["handler_runs"] == ours["done_markers"] == len(keys)
            row["ours"] = ours
            # Bare Celery: as many delay()s from as many threads, drained by its worker.
            clear_worker_state(client, keep=KEEP)
            took = delay_all(url, staging, f"b{senders:03d}", args.events, senders)
            row["bare_sent_per_s"] = round(args.events / took, 1)
            retarget(client, staging, BARE_QUEUE)
            cmd, env = bare_worker(url, "bench.celery_noop", args)
            bare = drain(
                client, cmd, env, staging, BARE_QUEUE, args.events, workdir, f"bare-{senders}"
            )
            bare["each_event_once"] = bare["handler_runs"] == args.events
            row["bare"] = bare
            row["ratio"] = round(ours["events_per_s"] / bare["events_per_s"], 2)
            log(
                f"{senders:>3} senders: ours {ours['events_per_s']:7.0f}/s "
                f"(mean batch {row['batches'].get('mean')}) bare {bare['events_per_s']:7.0f}/s "
                f"-> {row['ratio']:.2f}x  once: {ours['each_event_once']}/{bare['each_event_once']}"
            )
            rows[str(senders)] = row
    return rows


# -- report ---------------------------------------------------------------------------------


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def print_tables(report: dict[str, Any]) -> None:
    print(f"\nworkers by arrival pattern ({report['settings']['pool']}), events/s draining:")
    print("| senders | mean batch | ours | bare Celery | x bare | each once |")
    print("|---:|---:|---:|---:|---:|---|")
    for row in report.get("throughput", {}).values():
        once = row["ours"]["each_event_once"] and row["bare"]["each_event_once"]
        print(
            f"| {row['senders']} | {row['batches'].get('mean')} | "
            f"{row['ours']['events_per_s']:,.0f} | {row['bare']['events_per_s']:,.0f} | "
            f"**{row['ratio']:.2f}** | {'yes' if once else 'NO'} |"
        )
    print("\nlatency, answer to handler start (ms):")
    print(
        "| rate | ours p50 | ours p99 | bare p50 | bare p99 | p99 / bare's "
        "| bare + claim p50 | p99 | its p99 / bare's | ours / its | not started |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in report.get("latency", {}).values():
        ours, bare, claim = row.get("ours", {}), row.get("bare", {}), row.get("claim", {})
        print(
            f"| {row['rate']}/s | {ours.get('p50_ms')} | {ours.get('p99_ms')} | "
            f"{bare.get('p50_ms')} | {bare.get('p99_ms')} | {row.get('p99_ratio')} | "
            f"{claim.get('p50_ms')} | {claim.get('p99_ms')} | {row.get('claim_p99_ratio')} | "
            f"{row.get('ours_over_claim_p99')} | "
            f"{ours.get('missing')} / {bare.get('missing')} / {claim.get('missing')} |"
        )
    print(f"\nload: {report['uptime_start']}  ->  {report['uptime_end']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per arrival pattern")
    parser.add_argument("--senders", default="1,4,16,64")
    parser.add_argument("--rates", default="10,100,1000", help="events/s for the latency rows")
    parser.add_argument("--pool", default="--pool prefork -c 2", help="both workers' pool")
    parser.add_argument("--worker-args", default="", help="more options for both workers")
    parser.add_argument(
        "--our-env", action="append", default=[], metavar="VAR=VALUE", help="our worker only"
    )
    parser.add_argument("--skip", default="", help="'throughput' or 'latency'")
    parser.add_argument(
        "--appendfsync",
        default="always",
        choices=["always", "everysec"],
        help="Redis's AOF policy for both sides (everysec: what the fsync of each write costs)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    # Stopped from outside (a timeout, Ctrl-C): unwind, so every worker and Redis is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.senders = [int(x) for x in args.senders.split(",") if x]
    args.rates = [int(x) for x in args.rates.split(",") if x]
    settings = vars(args) | {"out": None}
    report: dict[str, Any] = {"settings": settings, "uptime_start": uptime()}
    started = time.monotonic()
    log(report["uptime_start"])
    with tempfile.TemporaryDirectory(prefix="uphooks-wp-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis", appendfsync=args.appendfsync).start()
        client = redis.Redis.from_url(server.url)
        report["redis_appendfsync"] = server.appendfsync
        try:
            reset(client)
            if "throughput" not in args.skip:
                report["throughput"] = throughput(args, client, server.url, workdir)
            if "latency" not in args.skip:
                report["latency"] = latency(args, client, server.url, workdir)
        finally:
            client.close()
            server.stop()
    report["uptime_end"] = uptime()
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    ratios = [row["ratio"] for row in report.get("throughput", {}).values()]
    if ratios:
        report["goal_3x_every_pattern"] = min(ratios) >= 3.0
        report["floor_1x_every_pattern"] = min(ratios) >= 1.0
    p99s = [row.get("p99_ratio") for row in report.get("latency", {}).values()]
    if p99s and all(p99s):
        report["goal_p99_not_worse"] = max(p for p in p99s if p) <= 1.0
    return finish(report, args.out, "worker-patterns", print_tables)


if __name__ == "__main__":
    sys.exit(main())
