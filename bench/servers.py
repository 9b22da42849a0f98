"""A server under test for the length of a ``with`` block: started on a free port, waited for
until ``/healthz`` answers, stopped after (harness/)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from harness import procs, wait
from harness.commands import uvicorn
from harness.redis import free_port

#: The baselines' uvicorn settings (one process, uvloop, httptools, no access log).
UVICORN_FLAGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
UVICORN_FLAGS += ["--log-level", "warning", "--workers", "1"]


@contextlib.contextmanager
def running(
    command: Callable[[int], list[str]], env: dict[str, str], workdir: Path, name: str
) -> Iterator[tuple[str, procs.Popen]]:
    """``command(port)`` started with ``env``; yields its URL and process."""
    port = free_port()
    log = workdir / f"server-{name}-{port}.log"
    proc = procs.spawn(command(port), env, log, cwd=Path(env.get("PYTHONPATH") or procs.ROOT))
    try:
        # Any answer will do: a baseline has no /healthz route.
        wait.until_listening(proc, port, log, expect=b"HTTP/1.1")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        procs.stop(proc)


def uvicorn_server(
    target: str, env: dict[str, str], workdir: Path
) -> contextlib.AbstractContextManager[tuple[str, procs.Popen]]:
    """An app factory under uvicorn with the baselines' settings."""
    return running(
        lambda port: uvicorn(target, port, *UVICORN_FLAGS), env, workdir, target.replace(":", "-")
    )
