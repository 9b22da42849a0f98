"""``make scaling``: what adding worker processes buys, measured by draining a fixed backlog.

For each layout (N worker instances x prefork concurrency C) and each workload:

1. a private Redis (the durable settings of deploy/docker-compose.yml) gets a backlog of
   deliveries through the ingress's own ``receiver.enqueue.Enqueuer`` (group commit; ``--batch``
   deliveries per Celery message), and the queue is set aside;
2. the workers start (``uphooks worker -c C``, real processes) and report ready;
3. the backlog is put back on the queue, and the clock runs until the queue and kombu's unacked
   set are empty, i.e. every message was handled and acknowledged;
4. every delivery must have its done marker and exactly one handler run.

Workloads: ``no-op`` (the handler does nothing: the pipeline's own per-event cost, CPU-bound) and
``sleep`` (the handler waits ``--sleep-ms``, like a call to another service: I/O-bound). Printed:
events/s, the ratio to one process, and the CPU the workers and Redis used while draining, which
shows where the limit is. Run it on a quiet machine: other processes' load shows in the figures
(the load average is printed before and after each run).

The workers load bench/scaling_handler.py: one handler for the event name ``bench_scaling``,
whose payload says how long to sleep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import orjson
import redis

from bench.common import EventsPerSecond, note
from bench.scaling_handler import EVENT, HANDLER
from harness import commands, procs
from harness.env import pipeline_env
from harness.machine import cpu_model
from harness.procfs import group_cpu_seconds
from harness.redis import running

ROOT = Path(__file__).resolve().parent.parent

# -- the driver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    instances: int
    concurrency: int

    @property
    def processes(self) -> int:
        return self.instances * self.concurrency

    def __str__(self) -> str:
        return f"{self.instances} x -c{self.concurrency}"


@dataclass
class Result(EventsPerSecond):
    workload: str
    batch: int
    layout: Layout
    events: int
    seconds: float
    worker_cpu: float
    redis_cpu: float
    load_before: float
    load_after: float
    #: Redis memory per event: while queued, and kept after handling (de-duplication window).
    queued_bytes: float
    kept_bytes: float


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def record(i: int, run: str, sleep_ms: int) -> tuple[str, bytes]:
    """A delivery as receiver/ingest.py stores it; the body is shaped like the provider's
    ``upload_completed`` sample (~500 bytes), so the memory figures are realistic."""
    key = f"d:{run}-{i}"
    payload = orjson.loads((ROOT / "tests" / "fixtures" / "upload_completed.json").read_bytes())
    payload.update(event=EVENT, job_id=f"{run}-{i}", sleep_ms=sleep_ms)
    body = orjson.dumps(payload).decode()
    stored = {
        "key": key,
        "event": EVENT,
        "received_at": time.time(),
        "headers": {"content-type": "application/json"},
        "body": body,
    }
    return key, orjson.dumps(stored)


async def fill(
    url: str, prefix: str, queue: str, keys: list[tuple[str, bytes]], batch: int
) -> None:
    import redis.asyncio as aioredis

    from receiver.enqueue import Enqueuer
    from uphooks.settings import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=url,
        key_prefix=prefix,
        queue=queue,
        enqueue_batch_max=batch,
    )
    client = aioredis.Redis.from_url(url)
    enqueuer = Enqueuer(client, settings)
    await enqueuer.start()
    try:
        for start in range(0, len(keys), 256):
            chunk = keys[start : start + 256]
            fresh = await asyncio.gather(*(enqueuer.submit(k, r) for k, r in chunk))
            assert all(fresh), "a benchmark delivery was taken for a duplicate"
    finally:
        await enqueuer.stop()
        await client.aclose()


class Workers:
    """``instances`` worker processes, each ``uphooks worker -c concurrency``; always stopped
    (warm shutdown first, so the pool children flush their counts)."""

    def __init__(self, layout: Layout, env: dict[str, str], logs: Path) -> None:
        self.layout = layout
        self.env = env
        self.logs = logs
        self.procs: list[procs.Popen] = []

    def __enter__(self) -> Workers:
        for i in range(self.layout.instances):
            name = f"scaling{i}-{uuid.uuid4().hex[:4]}"
            args = commands.worker("-P", "prefork", "-c", str(self.layout.concurrency), name=name)
            self.procs.append(procs.spawn(args, self.env, self.logs / f"worker{i}.log"))
        return self

    @property
    def groups(self) -> set[int]:
        return {p.pid for p in self.procs}

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def __exit__(self, *_: object) -> None:
        procs.stop_all(self.procs, timeout=30)


def drain(
    client: redis.Redis,
    url: str,
    workload: str,
    sleep_ms: int,
    events: int,
    batch: int,
    layout: Layout,
    workdir: Path,
    timeout: float,
) -> Result:
    run = uuid.uuid4().hex[:8]
    prefix, queue = f"scaling-{run}", f"scaling-{run}-q"
    staging = f"{queue}-staging"
    client.flushdb()
    deliveries = [record(i, run, sleep_ms) for i in range(events)]
    empty = _used_memory(client)
    asyncio.run(fill(url, prefix, queue, deliveries, batch))
    queued_bytes = (_used_memory(client) - empty) / events
    messages = client.llen(queue)
    assert messages == -(-events // batch), f"{messages} messages for {events} events"
    client.rename(queue, staging)  # out of the workers' sight while they start

    settings = {
        "key_prefix": prefix,
        "queue": queue,
        "handler_modules": "bench.scaling_handler",
        "builtin_log_handler": False,
        "log_level": "WARNING",
    }
    env = pipeline_env(url, settings)
    logs = workdir / f"{workload}-b{batch}-{layout.instances}x{layout.concurrency}-{run}"
    logs.mkdir(parents=True)
    ready_key = f"{prefix}:bench:ready"
    with Workers(layout, env, logs) as workers:
        deadline = time.monotonic() + 60
        while int(client.get(ready_key) or 0) < layout.instances:
            if not workers.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see {logs}")
            time.sleep(0.05)
        time.sleep(0.5)  # let every pool process reach its first poll
        load_before = os.getloadavg()[0]
        cpu0, redis0 = group_cpu_seconds(workers.groups), redis_cpu(client)
        started = time.monotonic()
        client.rename(staging, queue)
        end = _wait_drained(client, queue, started + timeout)
        seconds = end - started
        cpu1, redis1 = group_cpu_seconds(workers.groups), redis_cpu(client)
        load_after = os.getloadavg()[0]
    _check_exactly_once(client, prefix, [k for k, _ in deliveries])
    kept_bytes = (_used_memory(client) - empty) / events
    return Result(
        workload,
        batch,
        layout,
        events,
        seconds,
        (cpu1 - cpu0) / seconds,
        (redis1 - redis0) / seconds,
        load_before,
        load_after,
        queued_bytes,
        kept_bytes,
    )


def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _wait_drained(client: redis.Redis, queue: str, deadline: float) -> float:
    """When the queue and kombu's unacked set were both empty (twice in a row: a message
    is in neither for an instant between BRPOP and its unacked entry)."""
    first_empty: float | None = None
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        pipe.llen(queue)
        pipe.hlen("unacked")
        queued, unacked = pipe.execute()
        now = time.monotonic()
        if queued == 0 and unacked == 0:
            if first_empty is not None:
                return first_empty
            first_empty = now
        else:
            first_empty = None
        time.sleep(0.02)
    raise RuntimeError("the backlog did not drain in time")


def _check_exactly_once(client: redis.Redis, prefix: str, keys: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(f"{prefix}:handled:{key}", HANDLER)
    markers = pipe.execute()
    missing = sum(1 for m in markers if m != b"done")
    runs = int(client.get(f"{prefix}:bench:runs") or 0)
    if missing or runs != len(keys):
        raise RuntimeError(f"{missing} events without a done marker, {runs} runs for {len(keys)}")


def machine(client: redis.Redis) -> dict[str, Any]:
    import celery

    return {
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "redis": client.info("server")["redis_version"],
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def print_table(results: list[Result]) -> None:
    """One line per layout: medians over the rounds (and the range of events/s). CPU is shown as
    cores used while draining and as milliseconds per event: the second does not depend on how
    much of the machine other processes took."""
    groups: dict[tuple[str, int, Layout], list[Result]] = {}
    for r in results:
        groups.setdefault((r.workload, r.batch, r.layout), []).append(r)
    header = (
        f"{'workload':<8} {'batch':>5} {'layout':<9} {'procs':>5} {'events':>6} {'rounds':>6} "
        f"{'events/s (range)':>22} {'x 1 proc':>8} | {'workers: cores, ms/event':>24} | "
        f"{'redis: cores, ms/event':>22} | {'load avg':>9} | {'bytes/event queued, kept':>24}"
    )
    print(header)
    print("-" * len(header))
    base: dict[tuple[str, int], float] = {}
    for (workload, batch, layout), runs in groups.items():
        rate = median(r.rate for r in runs)
        if layout.processes == 1:
            base[(workload, batch)] = rate
        ratio = rate / base[(workload, batch)] if (workload, batch) in base else 0.0
        spread = f"({min(r.rate for r in runs):.0f}-{max(r.rate for r in runs):.0f})"
        cores = median(r.worker_cpu for r in runs)
        ms = median(r.worker_cpu * r.seconds / r.events * 1000 for r in runs)
        redis_cores = median(r.redis_cpu for r in runs)
        redis_ms = median(r.redis_cpu * r.seconds / r.events * 1000 for r in runs)
        load = f"{min(r.load_before for r in runs):.1f}-{max(r.load_after for r in runs):.1f}"
        print(
            f"{workload:<8} {batch:>5} {layout!s:<9} {layout.processes:>5} {runs[0].events:>6} "
            f"{len(runs):>6} {rate:>9.1f} {spread:>12} {ratio:>8.2f} | "
            f"{cores:>13.2f} {ms:>10.2f} | {redis_cores:>11.2f} {redis_ms:>10.2f} | "
            f"{load:>9} | {median(r.queued_bytes for r in runs):>13.0f} "
            f"{median(r.kept_bytes for r in runs):>10.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000, help="backlog for the no-op handler")
    parser.add_argument("--sleep-events", type=int, default=300, help="backlog, sleep handler")
    parser.add_argument("--sleep-ms", type=int, default=50)
    parser.add_argument("--batch", default="1", help="deliveries per message, e.g. 1,16")
    parser.add_argument("--workloads", default="no-op,sleep")
    parser.add_argument("--appendfsync", default="always", choices=("always", "everysec", "no"))
    parser.add_argument("--timeout", type=float, default=180, help="seconds per drain, at most")
    parser.add_argument(
        "--layouts", help="instead of the default matrix, e.g. 1x1,4x1,1x4 (instances x -c)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the matrix this many times (interleaved)"
    )
    parser.add_argument("--quick", action="store_true", help="small backlogs: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.sleep_events = 200, 40

    layouts = {
        # 1, 2, 4 worker instances of one process each; then one instance with more processes.
        "no-op": [Layout(1, 1), Layout(2, 1), Layout(4, 1), Layout(1, 2), Layout(1, 4)],
        "sleep": [
            Layout(1, 1),
            Layout(2, 1),
            Layout(4, 1),
            Layout(1, 4),
            Layout(1, 8),
            Layout(1, 16),
        ],
    }
    if args.layouts:
        chosen = [Layout(*map(int, item.split("x"))) for item in args.layouts.split(",")]
        layouts = dict.fromkeys(layouts, chosen)
    sizes = {"no-op": (args.events, 0), "sleep": (args.sleep_events, args.sleep_ms)}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="uphooks-scaling-") as tmp:
        workdir = Path(tmp)
        with running(workdir / "redis", args.appendfsync) as server:
            url = server.url
            client = redis.Redis.from_url(url)
            for key, value in machine(client).items():
                print(f"# {key}: {value}")
            print(f"# redis: appendonly yes, appendfsync {args.appendfsync}, noeviction")
            plan = [
                (workload, int(batch), layout)
                for workload in args.workloads.split(",")
                for batch in args.batch.split(",")
                for layout in layouts[workload]
            ]
            for round_ in range(1, args.rounds + 1):
                for workload, batch, layout in plan:
                    events, sleep_ms = sizes[workload]
                    note(f"round {round_}: {workload} batch={batch} {layout}: {events} events")
                    results.append(
                        drain(
                            client,
                            url,
                            workload,
                            sleep_ms,
                            events,
                            batch,
                            layout,
                            workdir,
                            args.timeout,
                        )
                    )
            client.close()
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
