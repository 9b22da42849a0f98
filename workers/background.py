"""Loops that run beside the worker in its main process (the scheduler, the reconcile job, the
notifier, the index pruner, the heartbeat), and the console's sampler: one thread each, one shape.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, Self


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Periodic:
    """Calls ``tick`` every ``interval`` seconds from a daemon thread until :meth:`stop`.

    A ``tick`` that raises is logged on ``log`` as "<what> failed (will keep trying)" and the
    next interval tries again, so Redis going away never ends a loop; ``once_per_outage`` says
    it only for the first failure until a tick succeeds again. ``at_once`` makes the first call
    as soon as the thread starts instead of one interval later. :meth:`stop` waits for a call in
    progress at most an interval and five seconds.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        tick: Callable[[], object],
        *,
        log: logging.Logger,
        what: str,
        at_once: bool = False,
        once_per_outage: bool = False,
    ) -> None:
        self._interval = interval
        self._tick = tick
        self._log = log
        self._what = what
        self._at_once = at_once
        self._once = once_per_outage
        self._failing = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + 5)

    def _run(self) -> None:
        if self._at_once:
            self._call()
        while not self._stopped.wait(self._interval):
            self._call()

    def _call(self) -> None:
        try:
            self._tick()
        except Exception as exc:
            if not (self._once and self._failing):
                self._log.warning("%s failed (will keep trying): %r", self._what, exc)
            self._failing = True
        else:
            self._failing = False


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
