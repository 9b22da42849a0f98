"""``python -m bench.run``: our ingress and workers beside their baselines, in one run.

The ingress (bench/ingress.py): the baselines and ``uphooks serve`` (the Procfile command, one and
two processes) in interleaved rounds under wrk; the workers (bench/workers.py): staged backlogs
drained by bare Celery and by ours. ``make bench`` runs this and the other benchmark modules
(bench/suite.py); ``make bench-soak`` watches memory (bench/soak.py).

Figures drift ~30% within a session on a shared 2-core machine: only the ratios of one run count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

# The names other benchmark modules import from here (bench/memory.py, bench/worker_patterns.py):
# each lives in the module that owns it now.
from bench.backlog import clear_worker_state, retarget, stage_bare
from bench.bodies import make_body, verification_env, write_requests
from bench.checks import batch_sizes, check_acked, count_done, queued_batches, reset
from bench.common import (
    BARE_QUEUE,
    OUR_QUEUE,
    PATH,
    PREFIX,
    RESULTS,
    SECRET,
    WORKER_FLAGS,
    base_env,
    log,
    save_report,
)
from bench.ingress import CONTENDERS, bench_ingress
from bench.load import Load, run_load
from bench.report import goals, machine, print_tables
from bench.servers import uvicorn_server
from bench.workers import POOLS, bench_workers, drain, ingress_batch_size, wait_ready
from harness.procs import spawn, stop
from harness.redis import RedisServer

__all__ = [
    "BARE_QUEUE",
    "OUR_QUEUE",
    "PATH",
    "PREFIX",
    "RESULTS",
    "SECRET",
    "WORKER_FLAGS",
    "Load",
    "base_env",
    "batch_sizes",
    "check_acked",
    "clear_worker_state",
    "count_done",
    "drain",
    "log",
    "make_body",
    "queued_batches",
    "reset",
    "retarget",
    "run_load",
    "spawn",
    "stage_bare",
    "stop",
    "uvicorn_server",
    "verification_env",
    "wait_ready",
    "write_requests",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rate", type=float, default=15000, help="unique requests per second")
    parser.add_argument(
        "--only", default=",".join(CONTENDERS), help="ingress contenders, or 'none'"
    )
    parser.add_argument("--events", type=int, default=20000, help="worker backlog")
    parser.add_argument("--events-batch1", type=int, default=5000)
    parser.add_argument(
        "--worker-batch",
        type=int,
        default=0,
        help="events per message in our worker's backlog (default: the mean batch our ingress "
        "made under load in this run, else UPHOOKS_ENQUEUE_BATCH_MAX)",
    )
    parser.add_argument("--worker-cases", default="bare,ours,ours-batch1", help="or 'none'")
    parser.add_argument("--pools", default=",".join(POOLS), help="worker pools to measure")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=[module:factory@]PATH[?VAR=VALUE&...]",
        help="also run our ingress app from another source tree and/or with other settings "
        "(to measure a proposed change)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.only = [x for x in args.only.split(",") if x in CONTENDERS]
    args.worker_cases = args.worker_cases.split(",")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not shutil.which("wrk"):
        print(
            "wrk is not installed: install it with `sudo apt-get install -y wrk` (Debian/Ubuntu) "
            "or `brew install wrk` (macOS). Falling back to bench/loadgen.py, a Python load "
            "generator: its figures are limited by the generator itself and are NOT comparable.",
            file=sys.stderr,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "settings": vars(args) | {"out": None}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="uphooks-bench-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()  # appendfsync always, for everyone
        client = redis.Redis.from_url(server.url)
        report["machine"]["redis_appendfsync"] = server.appendfsync
        try:
            if args.only or args.variant:
                report["ingress"] = bench_ingress(args, client, server.url, workdir)
            if not args.worker_batch:
                args.worker_batch = ingress_batch_size(report)
            report["settings"]["worker_batch"] = args.worker_batch
            if args.worker_cases != ["none"]:
                report["workers"] = bench_workers(args, client, server.url, workdir)
        finally:
            client.close()
            server.stop()
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["goals"] = goals(report)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    out = save_report(report, args.out, "bench")
    (RESULTS / "latest.json").write_bytes(out.read_bytes())
    print_tables(report)
    print(f"\nJSON: {out}  ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
