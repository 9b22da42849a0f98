"""bench/worker_patterns.py's processes: the ingress as the Procfile runs it, and the command line
and environment of our worker and of the bare Celery worker (same pool and options on both)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench.bodies import verification_env
from bench.common import BARE_QUEUE, OUR_QUEUE, WORKER_FLAGS, base_env
from harness import commands, procs, wait
from uphooks_cli.embedded import free_port

KEEP = "bench-wp-"  # staged backlogs survive clear_worker_state


@contextlib.contextmanager
def ingress(url: str, queue: str, workdir: Path) -> Iterator[int]:
    """``uphooks serve`` as the Procfile runs it, verification on, enqueueing onto ``queue``."""
    port = free_port()
    env = base_env(url, UPHOOKS_QUEUE=queue, **verification_env())
    log = workdir / f"ingress-{port}.log"
    with procs.started(commands.serve(port), env, log) as proc:
        wait.until_listening(proc, port, log, what="the ingress")
        yield port


def our_worker(
    url: str, handler: str, args: argparse.Namespace
) -> tuple[list[str], dict[str, str]]:
    cmd = commands.worker(*WORKER_FLAGS, *args.pool.split(), quiet=False)
    env = base_env(
        url,
        UPHOOKS_QUEUE=OUR_QUEUE,
        UPHOOKS_HANDLER_MODULES=handler,
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
        **dict(v.split("=", 1) for v in args.our_env),
    )
    return [*cmd, *args.worker_args.split()], env


def bare_worker(url: str, app: str, args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    cmd = commands.celery_worker(app, *WORKER_FLAGS)
    cmd += ["--loglevel", "WARNING", "-Q", BARE_QUEUE, *args.pool.split()]
    return [*cmd, *args.worker_args.split()], base_env(url, BENCH_QUEUE=BARE_QUEUE)
