"""The command lines of the processes under test, as an operator starts them."""

from __future__ import annotations

import sys

#: What tests, scenarios and benchmarks give every worker: no broadcast chatter at start-up.
QUIET_WORKER = ["--without-gossip", "--without-mingle"]


def cli(*args: str) -> list[str]:
    """``uphooks ARGS``, from this tree."""
    return [sys.executable, "-m", "uphooks_cli", *args]


def serve(port: int, *args: str, host: str = "127.0.0.1") -> list[str]:
    """The Procfile's ``web`` line: ``uphooks serve`` (uvicorn, our protocol, access log)."""
    return cli("serve", "--host", host, "--port", str(port), *args)


def uvicorn(target: str, port: int, *flags: str) -> list[str]:
    """Any ASGI app factory under uvicorn directly (the benchmarks' baselines)."""
    app = [sys.executable, "-m", "uvicorn", "--factory", target]
    return [*app, "--host", "127.0.0.1", "--port", str(port), *flags]


def worker(*args: str, name: str | None = None, quiet: bool = True) -> list[str]:
    """``uphooks worker``: ``name`` becomes Celery's node name ``<name>@%h``."""
    node = ["-n", f"{name}@%h"] if name else []
    return cli("worker", *node, *(QUIET_WORKER if quiet else []), *args)


def celery_worker(app: str, *args: str) -> list[str]:
    """A bare Celery worker (the baselines)."""
    return [sys.executable, "-m", "celery", "-A", app, "worker", *args]
