"""The command lines of the processes under test, as an operator starts them."""

from __future__ import annotations

import sys

#: What tests, scenarios and benchmarks give every worker: no broadcast chatter at start-up.
QUIET_WORKER = ["--without-gossip", "--without-mingle"]


def cli(*args: str, module: str = "uphooks_cli") -> list[str]:
    """``uphooks ARGS``, from this tree (``module``: where the command lives in it)."""
    return [sys.executable, "-m", module, *args]


def serve(port: int, *args: str, host: str = "127.0.0.1", module: str = "uphooks_cli") -> list[str]:
    """The Procfile's ``web`` line: ``uphooks serve`` (uvicorn, our protocol, access log)."""
    return cli("serve", "--host", host, "--port", str(port), *args, module=module)


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
