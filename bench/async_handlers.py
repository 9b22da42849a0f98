"""``python -m bench.async_handlers``: handlers that wait 100 ms on the network, ours beside bare
Celery's, at one delivery per message (what Upload-Post's one-at-a-time sending produces).

A local HTTP server (127.0.0.1, started here, answering every POST after ``--delay-ms``) stands
in for Telegram or a forward target. Each row drains a backlog set aside while the workers
start, and the clock runs from putting it back until every event ran:

- **ours, async, -P solo**: an ``async def`` handler awaiting ``handlers._http.apost`` on the
  worker's event loop (workers/aio.py), ``UPHOOKS_ASYNC_CONCURRENCY`` in flight, one process;
- **bare Celery, prefork -c N**: a task that POSTs with httpx and waits (bench/celery_http.py);
  the goal is read **at the same total RSS**: its events/s scaled by ours RSS / its RSS (prefork
  throughput on an I/O-bound task grows with its processes, and so does its memory);
- **ours, sync, -P threads -c T**, and **ours, sync, -P solo with UPHOOKS_SYNC_THREADS=T** (the
  plain handler on T threads of the worker's runner, workers/aio.py), beside **bare Celery,
  -P threads -c T**: the same wait in a plain ``def`` handler and task.

RSS is the largest sum over every process of a worker (its process group), sampled while
draining; CPU ms per event is the worker's CPU time (every process and thread, user + system)
while it drains, and the Redis server's beside it: on a shared machine they move far less than
events/s. Ours is checked exactly once (every pair done, the run count equal to the events).
The load average is printed beside each row: the machine may be shared.

``--sync-only --rounds N`` runs the sync rows N times in turn; ``--baseline-tree PATH`` adds, in
each round, our worker on the runner's threads run from another source tree (e.g. the main
branch), against the same Redis, HTTP server and bare Celery row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

from bench import probe
from bench.common import EventsPerSecond, note
from bench.sampler import Sampling
from handlers import Context, _http, on
from harness import commands, procfs, procs
from uphooks.events import BaseEvent

ROOT = Path(__file__).resolve().parent.parent
ASYNC_EVENT, SYNC_EVENT = "bench_http_async", "bench_http_sync"
HANDLERS = {ASYNC_EVENT: "bench.http_async", SYNC_EVENT: "bench.http_sync"}
URL = os.environ.get("BENCH_HTTP_URL", "http://127.0.0.1:9/")

# -- the handlers (run in our workers: UPHOOKS_HANDLER_MODULES=bench.async_handlers) ----------


@on(ASYNC_EVENT, name=HANDLERS[ASYNC_EVENT])
async def call_async(event: BaseEvent, ctx: Context) -> None:
    _http.check("bench server", await _http.apost("bench server", URL, 10.0, content=b"{}"))
    probe.count_run()


@on(SYNC_EVENT, name=HANDLERS[SYNC_EVENT])
def call_sync(event: BaseEvent, ctx: Context) -> None:
    _http.check("bench server", _http.post("bench server", URL, 10.0, content=b"{}"))
    probe.count_run()


# -- the driver -----------------------------------------------------------------------------


@dataclass
class Row(EventsPerSecond):
    name: str
    events: int
    seconds: float
    rss_mb: float
    load: str
    cpu_ms: float = 0.0  # the worker's CPU time per event (every process and thread), ms
    redis_ms: float = 0.0  # the Redis server's, ms


#: The bench's Redis server, whose CPU time per event is reported beside the worker's.
REDIS_PID: int | None = None


def redis_cpu_seconds() -> float:
    return sum(procfs.cpu_seconds(REDIS_PID)) if REDIS_PID else 0.0


class GroupPeak(Sampling):
    """The largest RSS of a process group, sampled every 0.25 s while it runs."""

    def __init__(self, group: int) -> None:
        super().__init__(0.25)
        self.group, self.peak = group, 0.0

    def sample(self, t: float) -> None:
        self.peak = max(self.peak, procfs.group_rss_kb(self.group) / 1024)


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
) -> Iterator[int]:
    proc = procs.spawn(args, env, log_path, cwd)
    try:
        yield proc.pid
    finally:
        procs.stop(proc, 15)
        procs.kill(proc)  # and what is left of its group (pool children outlive their parent)


def record(i: int, run: str, event: str) -> tuple[str, bytes]:
    key = f"d:{run}-{i}"
    body = orjson.dumps({"event": event, "job_id": f"{run}-{i}", "platform": "tiktok"}).decode()
    stored = {"key": key, "event": event, "received_at": time.time(), "body": body}
    return key, orjson.dumps(stored)


def drain(
    client: redis.Redis,
    queue: str,
    events: int,
    worker: list[str],
    env: dict[str, str],
    logs: Path,
    timeout: float,
    cwd: Path = ROOT,
) -> tuple[float, float, str, int, tuple[float, float]]:
    """Start the worker, put the set-aside backlog back, time until every event ran: the
    seconds, the peak RSS (MB), the load average before and after, the runs counted (a
    second after, so a late duplicate shows), and the CPU seconds the worker and the Redis
    server spent meanwhile."""
    staging = f"{queue}-staging"
    client.rename(queue, staging)
    with process(worker, env, logs, cwd) as pid:
        deadline = time.monotonic() + 60
        while not client.get(probe.READY_KEY):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {logs}")
            time.sleep(0.05)
        time.sleep(0.5)
        load = f"{os.getloadavg()[0]:.1f}"
        with GroupPeak(pid) as sampler:
            cpu = procfs.group_cpu_seconds({pid}), redis_cpu_seconds()
            started = time.monotonic()
            client.rename(staging, queue)
            while int(client.get(probe.RUNS_KEY) or 0) < events:
                if time.monotonic() > started + timeout:
                    raise RuntimeError(f"not drained in {timeout}s; see {logs}")
                time.sleep(0.02)
            seconds = time.monotonic() - started
            cpu = procfs.group_cpu_seconds({pid}) - cpu[0], redis_cpu_seconds() - cpu[1]
        load += f"-{os.getloadavg()[0]:.1f}"
        time.sleep(1.0)  # a late duplicate would show now
    return seconds, sampler.peak, load, int(client.get(probe.RUNS_KEY) or 0), cpu


def worker_env(url: str, http: str, root: Path = ROOT, **extra: str) -> dict[str, str]:
    """A worker's environment: this shell's, with the Redis and the HTTP server of this run,
    the code of the tree ``root``."""
    return dict(os.environ, PYTHONPATH=str(root), BENCH_REDIS_URL=url, BENCH_HTTP_URL=http, **extra)


def fresh(url: str) -> tuple[redis.Redis, str]:
    """A client of the emptied Redis, and a name for this row's run."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    return client, uuid.uuid4().hex[:8]


def ours(
    url: str,
    http: str,
    event: str,
    events: int,
    pool: list[str],
    work: Path,
    root: Path = ROOT,
) -> Row:
    """Our worker (of the tree ``root``) drains ``events`` deliveries of ``event``."""
    from bench.scaling import fill

    client, run = fresh(url)
    prefix, queue = f"ah-{run}", f"ah-{run}-q"
    deliveries = [record(i, run, event) for i in range(events)]
    asyncio.run(fill(url, prefix, queue, deliveries, 1))
    env = worker_env(
        url,
        http,
        root,
        UPHOOKS_REDIS_URL=url,
        UPHOOKS_KEY_PREFIX=prefix,
        UPHOOKS_QUEUE=queue,
        UPHOOKS_HANDLER_MODULES="bench.async_handlers",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
        UPHOOKS_LOG_LEVEL="WARNING",
    )
    env.pop("REDIS_URL", None)
    worker = commands.worker(*pool, name=f"ah-{run}")
    log_path = work / f"{run}.log"
    seconds, rss, load, runs, cpu = drain(client, queue, events, worker, env, log_path, 170, root)
    pipe = client.pipeline(transaction=False)
    for key, _ in deliveries:
        pipe.hget(f"{prefix}:handled:{key}", HANDLERS[event])
    missing = sum(1 for state in pipe.execute() if state != b"done")
    if missing or runs != events:
        raise RuntimeError(f"{missing} pairs not done, {runs} runs for {events} events")
    name = f"ours, {'async' if event == ASYNC_EVENT else 'sync'}, {' '.join(pool)}"
    if os.environ.get("UPHOOKS_SYNC_THREADS"):
        name += f", UPHOOKS_SYNC_THREADS={os.environ['UPHOOKS_SYNC_THREADS']}"
    if root != ROOT:
        name += f" [{root}]"
    return Row(name, events, seconds, rss, load, *per_event(cpu, events))


def bare(url: str, http: str, events: int, pool: list[str], work: Path) -> Row:
    client, run = fresh(url)
    queue = f"bare-{run}"
    env = worker_env(url, http, BENCH_QUEUE=queue)
    os.environ.update(BENCH_REDIS_URL=url, BENCH_QUEUE=queue)
    from bench.celery_http import app
    from bench.celery_http import http as task

    app.conf.broker_url = url
    with app.producer_or_acquire() as producer:
        for _ in range(events):
            task.apply_async(queue=queue, producer=producer)
    worker = commands.celery_worker("bench.celery_http", "-Q", queue, "-n", f"bare-{run}@%h")
    worker += [*commands.QUIET_WORKER, "--loglevel", "WARNING", *pool]
    log_path = work / f"{run}.log"
    seconds, rss, load, runs, cpu = drain(client, queue, events, worker, env, log_path, 170)
    if runs != events:
        raise RuntimeError(f"bare Celery ran {runs} tasks for {events}")
    name = f"bare Celery, {' '.join(pool)}"
    return Row(name, events, seconds, rss, load, *per_event(cpu, events))


def per_event(cpu: tuple[float, float], events: int) -> tuple[float, float]:
    """CPU seconds (worker, Redis) as milliseconds per event."""
    return cpu[0] * 1000 / events, cpu[1] * 1000 / events


@dataclass
class SyncRound:
    """The sync rows of one round, run one after the other: ours on Celery's threads, ours on
    the runner's threads (and the baseline tree's, when given), bare Celery on its threads."""

    threads: Row
    runner: Row
    bare: Row
    baseline: Row | None = None


def sync_round(url: str, http: str, args: argparse.Namespace, work: Path, index: int) -> SyncRound:
    threads = ["-P", "threads", "-c", str(args.threads)]
    events = args.threads_events
    note(f"round {index + 1}: ours sync threads: {events} events")
    on_threads = ours(url, http, SYNC_EVENT, events, threads, work)
    os.environ["UPHOOKS_SYNC_THREADS"] = str(args.threads)
    try:
        trees = [ROOT] + ([args.baseline_tree] if args.baseline_tree else [])
        if index % 2:
            trees.reverse()  # alternate which tree goes first
        runner: dict[Path, Row] = {}
        for root in trees:
            note(f"round {index + 1}: ours sync on the runner's threads [{root}]: {events} events")
            runner[root] = ours(url, http, SYNC_EVENT, events, ["-P", "solo"], work, root)
    finally:
        del os.environ["UPHOOKS_SYNC_THREADS"]
    note(f"round {index + 1}: bare threads: {events} events")
    bare_threads = bare(url, http, events, threads, work)
    baseline = runner.get(args.baseline_tree) if args.baseline_tree else None
    return SyncRound(on_threads, runner[ROOT], bare_threads, baseline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--async-events", type=int, default=3000)
    parser.add_argument("--async-concurrency", type=int, default=100)
    parser.add_argument("--async-pool", default="-P solo", help="our async worker's pool options")
    parser.add_argument("--prefork", type=int, default=2, help="bare Celery's -c")
    parser.add_argument("--prefork-events", type=int, default=150)
    parser.add_argument("--threads", type=int, default=16, help="-c of both -P threads rows")
    parser.add_argument("--threads-events", type=int, default=1000)
    parser.add_argument(
        "--sync-only", action="store_true", help="only the sync rows (no async, no prefork)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the sync rows this many times, in turn"
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="in each round, also our worker on the runner's threads from this source tree "
        "(e.g. /work/main: the same handler and machine, another version of uphooks)",
    )
    args = parser.parse_args(argv)
    from uphooks_cli.embedded import RedisServer, free_port  # the driver only, not the workers

    rows: list[Row] = []
    rounds: list[SyncRound] = []
    with tempfile.TemporaryDirectory(prefix="uphooks-async-bench-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis", appendfsync="everysec").start()
        global REDIS_PID
        REDIS_PID = server.process.pid if server.process else None
        port = free_port()
        serve = [sys.executable, "-m", "bench.slow_http", str(port), str(args.delay_ms)]
        try:
            with process(serve, dict(os.environ, PYTHONPATH=str(ROOT)), work / "server.log"):
                http = f"http://127.0.0.1:{port}/hook"
                time.sleep(0.5)
                print(f"# uptime: {subprocess.getoutput('uptime').strip()}")
                print(f"# cpus: {os.cpu_count()}; handler waits {args.delay_ms} ms on 127.0.0.1")
                os.environ["UPHOOKS_ASYNC_CONCURRENCY"] = str(args.async_concurrency)
                if not args.sync_only:
                    note(f"ours async: {args.async_events} events")
                    pool = args.async_pool.split()
                    rows.append(ours(server.url, http, ASYNC_EVENT, args.async_events, pool, work))
                    note(f"bare prefork -c {args.prefork}: {args.prefork_events} events")
                    prefork = ["-P", "prefork", "-c", str(args.prefork)]
                    rows.append(bare(server.url, http, args.prefork_events, prefork, work))
                for index in range(args.rounds):
                    rounds.append(sync_round(server.url, http, args, work, index))
                print(f"# uptime: {subprocess.getoutput('uptime').strip()}")
        finally:
            server.stop()
    report(rows, rounds, args.async_concurrency)
    return 0


def report(rows: list[Row], rounds: list[SyncRound], concurrency: int) -> None:
    """Every row, then the ratios: async against prefork, and per round the sync rows against
    bare Celery -P threads measured beside them."""
    print(
        f"{'row':<62} {'events':>6} {'events/s':>9} {'RSS MB':>7} {'ev/s per GB':>11} "
        f"{'CPU ms/ev':>9} {'Redis ms/ev':>11} {'load':>11}"
    )
    every = rows + [
        row for r in rounds for row in (r.threads, r.runner, r.baseline, r.bare) if row is not None
    ]
    for row in every:
        per_gb = row.rate / row.rss_mb * 1024
        print(
            f"{row.name:<62} {row.events:>6} {row.rate:>9.1f} {row.rss_mb:>7.0f} "
            f"{per_gb:>11.0f} {row.cpu_ms:>9.2f} {row.redis_ms:>11.2f} {row.load:>11}"
        )
    if rows:
        aio, prefork = rows
        same_rss = prefork.rate * aio.rss_mb / prefork.rss_mb
        print(
            f"async (UPHOOKS_ASYNC_CONCURRENCY={concurrency}) / bare prefork at the same total "
            f"RSS: {aio.rate / same_rss:.1f}x (goal >= 10x; raw {aio.rate / prefork.rate:.1f}x)"
        )
    for index, r in enumerate(rounds):
        line = (
            f"round {index + 1}, sync / bare Celery -P threads: ours -P threads "
            f"{r.threads.rate / r.bare.rate:.2f}x; ours on the runner's threads "
            f"{r.runner.rate / r.bare.rate:.2f}x (goal >= 1.0x)"
        )
        if r.baseline is not None:
            line += f"; the baseline tree's {r.baseline.rate / r.bare.rate:.2f}x"
        print(line)
        cpu = f"{r.runner.cpu_ms:.2f}"
        if r.baseline is not None:
            cpu += f" (the baseline tree's {r.baseline.cpu_ms:.2f})"
        print(
            f"round {index + 1}, worker CPU ms per event: ours on the runner's threads {cpu}, "
            f"bare Celery -P threads {r.bare.cpu_ms:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
