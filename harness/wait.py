"""Waiting, always bounded: for a predicate, for an HTTP listener, for a line in a log."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

from harness.procs import Popen


class WaitTimeout(AssertionError):
    """What was waited for did not happen in time (an assertion failure in a test)."""


def wait_for(
    predicate: Callable[[], object], timeout: float = 20, interval: float = 0.05, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout}s waiting for {what or predicate}")


def answers(
    port: int, path: str = "/healthz", host: str = "127.0.0.1", expect: bytes = b"HTTP/1.1 200"
) -> bool:
    """Does an HTTP server on ``port`` answer ``GET path`` with 200 (one short connection)?
    ``expect=b"HTTP/1.1"``: with anything at all."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1) as s:
        s.sendall(request)
        return s.recv(64).startswith(expect)
    return False


def until_listening(
    proc: Popen,
    port: int,
    log: Path,
    timeout: float = 30,
    expect: bytes = b"HTTP/1.1 200",
    what: str = "",
) -> None:
    """Until ``proc`` answers on ``port`` (see :func:`answers`); RuntimeError ("<what> did not
    start; see <log>") if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while not answers(port, expect=expect):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what or log.stem} did not start; see {log}")
        time.sleep(0.05)


def until_logged(proc: Popen, log: Path, needle: bytes = b" ready.", timeout: float = 30) -> None:
    """Until ``needle`` shows in ``log`` (a Celery worker writes `` ready.`` when it is)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and needle in log.read_bytes():
            return
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{log.stem} exited: {tail}")
        time.sleep(0.05)
    raise RuntimeError(f"{log.stem} not ready; see {log}")
