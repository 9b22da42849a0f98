"""Start and stop the processes under test.

Each process starts in a session of its own, so its process group holds a Celery worker's pool
children too, and its output (stdout and stderr) is appended to one log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Popen = subprocess.Popen[bytes]


def spawn(args: list[str], env: Mapping[str, str], log: Path, cwd: Path = ROOT) -> Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.contextmanager
def started(args: list[str], env: Mapping[str, str], log: Path) -> Iterator[Popen]:
    """:func:`spawn` for the ``with`` block, :func:`stop` on the way out."""
    proc = spawn(args, env, log)
    try:
        yield proc
    finally:
        stop(proc)


def signal_group(proc: Popen, sig: int) -> None:
    """``sig`` to the process and everything in its group (pool children, even orphaned)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def kill(proc: Popen) -> None:
    """SIGKILL to the whole group, then reap the main process."""
    signal_group(proc, signal.SIGKILL)
    proc.wait()


def stop(proc: Popen, timeout: float = 20) -> None:
    """SIGTERM to the main process only: a Celery worker then stops its pool children itself,
    and they run their shutdown handlers. The group is killed if it is not gone in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill(proc)


def stop_all(procs: list[Popen], timeout: float = 20) -> None:
    """:func:`stop` for several at once: all get SIGTERM first, then each its share of time."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        if proc.poll() is None:
            kill(proc)


def kill_all(procs: list[Popen]) -> None:
    """SIGKILL to every group (pool children outlive a dead parent: the group reaches them)."""
    for proc in procs:
        kill(proc)
