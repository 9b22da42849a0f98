"""``make bench-soak``: memory over a long run (issue 14, goal 6), ours beside bare Celery's.

For ``--seconds`` (``SOAK_SECONDS``, 600 by default), at a steady ``--rate`` of distinct signed
deliveries per second (paced, not flat out: a soak looks for growth, not for a ceiling, and the
machine is shared):

- our ingress as the Procfile runs it (``uphooks serve``, access log on, verification on) takes
  them, and our worker (``uphooks worker``, prefork ``-c 2``, one no-op handler) handles them;
- the console (``uphooks console``), when this tree has one, is signed in to and its pages read
  every 2 s (the event list, the overview);
- beside them, a bare Celery worker (same options, prefork ``-c 2``, a no-op task), on a Redis of
  its own, gets one message per event at the same rate: Celery's own growth, to tell from ours.

RSS of every process (each pool child on its own) is sampled every ``--interval`` seconds. The
criterion, per process: after a warm-up (the first fifth of the run, at least 30 s), the median
of the first tenth of what is left against the median of the last tenth must differ by less
than 1 MB, and the least-squares slope over everything after the warm-up must stay under
0.1 MB per minute. Both are printed, with the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from bench import memtrace
from bench.backlog import retarget, stage_bare
from bench.bodies import make_body, signed_headers, verification_env
from bench.common import (
    BARE_QUEUE,
    OUR_QUEUE,
    PATH,
    WORKER_FLAGS,
    base_env,
    finish,
    log,
)
from bench.probe import READY_KEY
from bench.sampler import Sampling
from bench.workers import our_worker_env
from harness import commands, procfs, procs, wait
from harness.redis import free_port, running

GROWTH_MB = 1.0
SLOPE_MB_PER_MIN = 0.1
CONSOLE_TOKEN = "soak-" + "0123456789abcdef" * 3


def console_present() -> bool:
    """Has this tree the console (the console-web lane's ``uphooks console``)?"""
    return importlib.util.find_spec("console") is not None


# -- load -----------------------------------------------------------------------------------


def paced(rate: float, stop: threading.Event, send: Callable[[int], None]) -> None:
    """``send(i)`` ``rate`` times a second until ``stop``, catching up when late."""
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
            continue
        send(i)
        i += 1


class Sender:
    """Distinct signed deliveries to the ingress on one kept-alive connection per thread."""

    def __init__(self, port: int, tag: str) -> None:
        self.port = port
        self.tag = tag  # 11 characters: the job ids stay distinct across senders
        self.statuses: dict[int, int] = {}
        self._conn: http.client.HTTPConnection | None = None
        self._signed = bool(verification_env())

    def __call__(self, i: int) -> None:
        conn = self._conn
        if conn is None:
            conn = self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        body = make_body(f"{self.tag}{i:09d}")
        headers = {"Content-Type": "application/json", "X-Upload-Post-Event": "upload_completed"}
        if self._signed:
            headers.update(signed_headers(body))
        try:
            conn.request("POST", PATH, body, headers)
            status = conn.getresponse()
            status.read()
            code = status.status
        except (OSError, http.client.HTTPException):
            conn.close()
            self._conn = None
            code = 0
        self.statuses[code] = self.statuses.get(code, 0) + 1


def bare_feeder(client: redis.Redis, template: bytes) -> Callable[[int], None]:
    """One bare Celery message per call: copies of a staged message with fresh ids."""
    message = orjson.loads(template)

    def push(i: int) -> None:
        task_id = str(uuid.uuid4())
        message["headers"].update(id=task_id, root_id=task_id)
        message["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
        client.lpush(BARE_QUEUE, orjson.dumps(message))

    return push


def console_reader(url: str) -> Callable[[int], None]:
    import httpx

    # Same-origin, as a browser's sign-in form (the console refuses a foreign origin).
    client = httpx.Client(base_url=url, timeout=10, headers={"Origin": url})
    signed_in = client.post("/login", data={"token": CONSOLE_TOKEN})
    if signed_in.status_code >= 400:
        raise RuntimeError(f"the console refused the soak's token: {signed_in.status_code}")

    def read(i: int) -> None:
        with contextlib.suppress(httpx.HTTPError):
            client.get("/events" if i % 2 else "/")

    return read


# -- growth ---------------------------------------------------------------------------------


def growth(points: list[tuple[float, float]], seconds: float) -> dict[str, Any]:
    """The criterion of the module docstring, for one process's (t, MB) samples."""
    warm = max(30.0, seconds / 5)
    after = [p for p in points if p[0] >= warm] or points
    tenth = max(1, len(after) // 10)
    early = statistics.median(p[1] for p in after[:tenth])
    late = statistics.median(p[1] for p in after[-tenth:])
    slope = 0.0
    if len(after) > 2:
        ts = [p[0] / 60 for p in after]
        mbs = [p[1] for p in after]
        slope = statistics.linear_regression(ts, mbs).slope
    return {
        "start_mb": points[0][1] if points else 0,
        "early_mb": round(early, 1),
        "late_mb": round(late, 1),
        "growth_mb": round(late - early, 2),
        "slope_mb_per_min": round(slope, 3),
        "flat": late - early < GROWTH_MB and slope < SLOPE_MB_PER_MIN,
    }


class Watch(Sampling):
    """RSS of named processes (and each pool child) every ``interval`` seconds, in a thread."""

    def __init__(self, procs_: dict[str, procs.Popen], interval: float) -> None:
        super().__init__(interval)
        self.procs = procs_
        self.series: dict[str, list[tuple[float, float]]] = {}

    def sample(self, t: float) -> None:
        t = round(t, 1)
        for name, proc in self.procs.items():
            self._add(name, t, procfs.rss_kb(proc.pid))
            for n, child in enumerate(sorted(procfs.children(proc.pid))):
                self._add(f"{name} child {n + 1}", t, procfs.rss_kb(child))

    def _add(self, name: str, t: float, kb: int) -> None:
        if kb:
            self.series.setdefault(name, []).append((t, round(kb / 1024, 2)))


def trace_env(where: Path | None, frames: int) -> dict[str, str]:
    """``--trace DIR``: tracemalloc in our pool children, snapshots in DIR (bench/memtrace.py);
    ``--trace-frames 0``: pymalloc's account and the mappings only, without tracemalloc."""
    if where is None:
        return {}
    return {
        memtrace.DIR_ENV: str(where.resolve()),
        memtrace.EVERY_ENV: "20",
        memtrace.FRAMES_ENV: str(frames),
    }


# -- the run --------------------------------------------------------------------------------


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"seconds": args.seconds, "rate": args.rate}
    report["worker_env"] = args.worker_env
    report["load_average_at_start"] = os.getloadavg()
    with (
        running(workdir / "redis") as ours_redis,
        running(workdir / "redis-bare") as bare_redis,
        contextlib.ExitStack() as stack,
    ):
        client = redis.Redis.from_url(ours_redis.url)
        bare_client = redis.Redis.from_url(bare_redis.url)
        port = free_port()
        env = base_env(ours_redis.url, UPHOOKS_QUEUE=OUR_QUEUE, **verification_env())
        del env["UPHOOKS_LOG_LEVEL"]  # as shipped: INFO, one access line per request
        watched: dict[str, procs.Popen] = {}
        watched["ingress"] = stack.enter_context(
            procs.started(commands.serve(port), env, workdir / "ingress.log")
        )
        wait.until_listening(watched["ingress"], port, workdir / "ingress.log")
        worker_log = workdir / "worker.log"
        watched["worker"] = stack.enter_context(
            procs.started(
                commands.worker(*WORKER_FLAGS, "-c", "2", quiet=False),
                our_worker_env(ours_redis.url)
                | trace_env(args.trace, args.trace_frames)
                | args.worker_env,
                worker_log,
            )
        )
        stage_bare(bare_client, bare_redis.url, "bench-soak-stage", 1)
        retarget(bare_client, "bench-soak-stage", BARE_QUEUE)
        template: bytes = bare_client.rpop("bench-soak-stage")  # type: ignore[assignment]
        bare_log = workdir / "bare.log"
        bare_cmd = commands.celery_worker("bench.celery_noop", *WORKER_FLAGS, "-Q", BARE_QUEUE)
        bare_cmd += ["--loglevel", "WARNING", "--pool", "prefork", "-c", "2"]
        watched["bare Celery worker"] = stack.enter_context(
            procs.started(bare_cmd, base_env(bare_redis.url, BENCH_QUEUE=BARE_QUEUE), bare_log)
        )
        feeders: list[tuple[float, Callable[[int], None]]] = []
        if console_present():
            console_port = free_port()
            console_env = env | {
                "UPHOOKS_CONSOLE_TOKENS": f"soak:operator:{CONSOLE_TOKEN}",
                "UPHOOKS_CONSOLE_SECURE_COOKIES": "false",
            }
            console_log = workdir / "console.log"
            watched["console"] = stack.enter_context(
                procs.started(
                    commands.cli("console", "--port", str(console_port)), console_env, console_log
                )
            )
            wait.until_listening(watched["console"], console_port, console_log)
            feeders.append((0.5, console_reader(f"http://127.0.0.1:{console_port}")))
            report["console"] = "included"
        else:
            report["console"] = "not in this tree (the console-web lane adds `uphooks console`)"
        wait.wait_for(
            lambda: client.exists(READY_KEY) and bare_client.exists(READY_KEY),
            timeout=60,
            what="both workers ready",
        )
        run = uuid.uuid4().hex[:8]
        threads = max(1, round(args.rate / 50))  # each sender ~50 requests/s
        senders = [Sender(port, f"{run}{n:03d}") for n in range(threads)]
        feeders += [(args.rate / threads, sender) for sender in senders]
        feeders.append((args.rate, bare_feeder(bare_client, template)))
        client.config_resetstat()
        stop = threading.Event()
        runners = [
            threading.Thread(target=paced, args=(rate, stop, send), daemon=True)
            for rate, send in feeders
        ]
        log(f"soak: {args.seconds:.0f} s at {args.rate:g} deliveries/s; {report['console']}")
        with Watch(watched, args.interval) as watch:
            for t in runners:
                t.start()
            stop.wait(args.seconds)
            stop.set()
            for t in runners:
                t.join(15)
        stats = client.info("commandstats")
        report["our_celery_messages"] = int(stats.get("cmdstat_lpush", {}).get("calls", 0))
        bare_stats = bare_client.info("commandstats")
        report["bare_celery_messages"] = int(bare_stats.get("cmdstat_lpush", {}).get("calls", 0))
        statuses: dict[str, int] = {}
        for sender in senders:
            for code, n in sender.statuses.items():
                statuses[str(code)] = statuses.get(str(code), 0) + n
        report["statuses"] = statuses
        client.close()
        bare_client.close()
    report["load_average_at_end"] = os.getloadavg()
    report["processes"] = {
        name: growth(points, args.seconds) | {"mb": points}
        for name, points in sorted(watch.series.items())
    }
    return report


def print_report(report: dict[str, Any]) -> None:
    start = " ".join(f"{x:.2f}" for x in report["load_average_at_start"])
    end = " ".join(f"{x:.2f}" for x in report["load_average_at_end"])
    print(f"\nMemory over {report['seconds']:.0f} s at {report['rate']:g} deliveries/s")
    print(f"load average: {start} at the start, {end} at the end")
    print(
        f"answers: {report['statuses']}; Celery messages: ours {report['our_celery_messages']}, "
        f"bare {report['bare_celery_messages']}; console: {report['console']}"
    )
    print(f"{'process':<28}{'start':>8}{'early':>8}{'late':>8}{'growth':>8}{'MB/min':>8}  flat")
    for name, row in report["processes"].items():
        print(
            f"{name:<28}{row['start_mb']:8.1f}{row['early_mb']:8.1f}{row['late_mb']:8.1f}"
            f"{row['growth_mb']:+8.2f}{row['slope_mb_per_min']:+8.3f}  "
            f"{'yes' if row['flat'] else 'NO'}"
        )


class _Merge(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, getattr(namespace, self.dest) | values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    default_seconds = float(os.environ.get("SOAK_SECONDS") or 600)
    parser.add_argument("--seconds", type=float, default=default_seconds)
    parser.add_argument("--rate", type=float, default=100, help="deliveries per second")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--trace", type=Path, default=None, help="tracemalloc snapshots of our pool children here"
    )
    parser.add_argument(
        "--worker-env",
        type=lambda kv: dict([kv.split("=", 1)]),
        action=_Merge,
        default={},
        metavar="NAME=VALUE",
        help="a variable for our worker only (an A/B: UPHOOKS_WORKER_BATCH_MAX=1); repeatable",
    )
    parser.add_argument("--trace-frames", type=int, default=12, help="0: pymalloc's account only")
    args = parser.parse_args(argv)
    if args.trace:  # the processes' logs kept beside the snapshots
        (args.trace / "run").mkdir(parents=True, exist_ok=True)
        report = soak(args, args.trace / "run")
    else:
        with tempfile.TemporaryDirectory(prefix="uphooks-soak-") as tmp:
            report = soak(args, Path(tmp))
    return finish(report, args.out, "soak", print_report)


if __name__ == "__main__":
    sys.exit(main())
