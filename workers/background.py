"""Loops that run beside the worker in its main process (the scheduler, the reconcile job)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...


def while_worker_runs(start: Callable[[], Stoppable]) -> None:
    """Call ``start`` once the worker is ready, and stop what it returned on shutdown.

    Call once where the Celery app's signals are wired (``workers/tasks.py``).
    """
    from celery import signals

    running: list[Stoppable] = []

    def ready(**_: Any) -> None:
        if not running:
            running.append(start())

    def shutdown(**_: Any) -> None:
        while running:
            running.pop().stop()

    signals.worker_ready.connect(ready, weak=False)
    signals.worker_shutdown.connect(shutdown, weak=False)
