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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bench.common import save_report
from bench.loadgen import _requests, exchange
from bench.probe import READY_KEY, RUNS_KEY
from bench.run import (
    RESULTS,
    WORKER_FLAGS,
    base_env,
    batch_sizes,
    clear_worker_state,
    count_done,
    drain,
    log,
    make_body,
    queued_batches,
    reset,
    retarget,
    spawn,
    stop,
    verification_env,
    wait_ready,
    write_requests,
)
from bench.stamps import STARTED_KEY
from uphooks_cli.embedded import RedisServer, free_port

OUR_QUEUE = "bench-ours"
BARE_QUEUE = "bench-noop"
KEEP = "bench-wp-"  # staged backlogs survive clear_worker_state
_KEY = re.compile(rb'"delivery_key":"([^"]+)"')
#: Seconds of open-loop sending per latency rate (fewer at low rates would give too few samples).
LATENCY_SECONDS = {10: 10.0, 100: 4.0, 1000: 3.0}


# -- processes ------------------------------------------------------------------------------


@contextlib.contextmanager
def ingress(url: str, queue: str, workdir: Path) -> Iterator[int]:
    """``uphooks serve`` as the Procfile runs it, verification on, enqueueing onto ``queue``."""
    port = free_port()
    env = base_env(url, UPHOOKS_QUEUE=queue, **verification_env())
    cmd = [sys.executable, "-m", "uphooks_cli", "serve", "--host", "127.0.0.1"]
    proc = spawn([*cmd, "--port", str(port)], env, workdir / f"ingress-{port}.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1) as s,
            ):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the ingress did not start; see {workdir}")
            time.sleep(0.1)
        yield port
    finally:
        stop(proc)


def our_worker(
    url: str, handler: str, args: argparse.Namespace
) -> tuple[list[str], dict[str, str]]:
    cmd = [sys.executable, "-m", "uphooks_cli", "worker", *WORKER_FLAGS, *args.pool.split()]
    env = base_env(
        url,
        UPHOOKS_QUEUE=OUR_QUEUE,
        UPHOOKS_HANDLER_MODULES=handler,
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
        **dict(v.split("=", 1) for v in args.our_env),
    )
    return [*cmd, *args.worker_args.split()], env


def bare_worker(url: str, app: str, args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", *WORKER_FLAGS]
    cmd += ["--loglevel", "WARNING", "-Q", BARE_QUEUE, *args.pool.split()]
    return [*cmd, *args.worker_args.split()], base_env(url, BENCH_QUEUE=BARE_QUEUE)


# -- senders --------------------------------------------------------------------------------


async def post_all(port: int, requests: list[bytes], senders: int) -> tuple[list[str], float]:
    """``senders`` connections, each posting and waiting for its answer; the keys accepted."""
    todo = iter(requests)
    keys: list[str] = []
    refused = 0

    async def sender() -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for request in todo:
            status, body = await exchange(reader, writer, request)
            found = _KEY.search(body)
            if status == 202 and found:
                keys.append(found.group(1).decode())
            else:
                refused += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    elapsed = time.perf_counter() - t0
    if refused:
        raise RuntimeError(f"{refused} deliveries were not answered 202")
    return keys, elapsed


async def post_at_rate(port: int, requests: list[bytes], rate: float) -> dict[str, float]:
    """Open loop: request i goes at start + i / rate on a free connection; when each was
    answered 202 (time.time()), by delivery key."""
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(32):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    answered: dict[str, float] = {}

    async def one(request: bytes) -> None:
        conn = await free.get()
        status, body = await exchange(*conn, request)
        at = time.time()
        free.put_nowait(conn)
        found = _KEY.search(body)
        if status != 202 or not found:
            raise RuntimeError(f"answered {status}: {body[:200]!r}")
        answered[found.group(1).decode()] = at

    start = time.monotonic()
    tasks = []
    for i, request in enumerate(requests):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait()[1].close()
    return answered


def delay_all(url: str, queue: str, tag: str, events: int, senders: int) -> float:
    """``senders`` threads ``delay()`` the bare no-op task, one event per message."""
    from bench.celery_noop import noop

    bodies = [make_body(f"{tag[:8]:>8}{i:012d}").decode() for i in range(events)]
    todo = iter(bodies)
    lock = threading.Lock()

    def sender() -> None:
        while True:
            with lock:
                body = next(todo, None)
            if body is None:
                return
            noop.apply_async(args=[body], queue=queue)  # delay(), onto the staging list

    t0 = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        for future in [pool.submit(sender) for _ in range(senders)]:
            future.result()
    return time.perf_counter() - t0


def delay_at_rate(count: int, rate: float) -> dict[str, float]:
    """Open loop: ``stamp.delay(name)`` at start + i / rate, from a pool of threads; when each
    ``delay()`` returned (time.time()), by name."""
    from bench.celery_stamp import stamp

    answered: dict[str, float] = {}
    tag = uuid.uuid4().hex[:8]

    def one(name: str) -> None:
        stamp.delay(name)
        answered[name] = time.time()

    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        futures = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, f"{tag}-{i}"))
        for future in futures:
            future.result()
    return answered


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


# -- latency --------------------------------------------------------------------------------


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
        for rate in [args.rates[0], *args.rates]:  # the first pass warms the pool up
            client.delete(STARTED_KEY)
            answered = send(rate, int(rate * LATENCY_SECONDS.get(rate, 3.0)))
            out[rate] = _latencies(answered, _started(client, answered))
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
    print("| rate | ours p50 | ours p99 | bare p50 | bare p99 | p99 / bare's | not started |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for row in report.get("latency", {}).values():
        ours, bare = row.get("ours", {}), row.get("bare", {})
        print(
            f"| {row['rate']}/s | {ours.get('p50_ms')} | {ours.get('p99_ms')} | "
            f"{bare.get('p50_ms')} | {bare.get('p99_ms')} | {row.get('p99_ratio')} | "
            f"{ours.get('missing')} / {bare.get('missing')} |"
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
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    # Stopped from outside (a timeout, Ctrl-C): unwind, so every worker and Redis is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.senders = [int(x) for x in args.senders.split(",") if x]
    args.rates = [int(x) for x in args.rates.split(",") if x]
    RESULTS.mkdir(parents=True, exist_ok=True)
    settings = vars(args) | {"out": None}
    report: dict[str, Any] = {"settings": settings, "uptime_start": uptime()}
    started = time.monotonic()
    log(report["uptime_start"])
    with tempfile.TemporaryDirectory(prefix="uphooks-wp-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()  # appendfsync always, for both sides
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
    out = save_report(report, args.out, "worker-patterns")
    print_tables(report)
    print(f"\nJSON: {out}  ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
