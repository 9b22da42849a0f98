"""Per-handler time limits, enforced per call in the process running it.

Celery's limits are per message, and a message holds many events. So a handler's ``time_limit``
is enforced per call with a real-time interval timer (``SIGALRM``): the call is interrupted with
:class:`HandlerTimeLimit`, a transient error, so it is retried with backoff like any failure.
This needs the task to run on the process's main thread (prefork and solo pools, the defaults);
on a thread pool the per-call limit is not enforced and only the message's soft/hard limits apply.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from handlers.errors import TransientError

log = logging.getLogger("uphooks.worker")


class SoftTimeLimit(Exception):
    """Stand-in type; the task module passes Celery's SoftTimeLimitExceeded."""


class HandlerTimeLimit(TransientError):
    """A handler call ran past its ``time_limit``: counted as a failed attempt, then retried."""


_warned_no_timer = False


@contextmanager
def time_limit(seconds: float | None, name: str) -> Iterator[None]:
    """Interrupt the body with HandlerTimeLimit after ``seconds`` (main thread only)."""
    global _warned_no_timer
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        if not _warned_no_timer:
            _warned_no_timer = True
            log.warning(
                "handler time limits need the prefork or solo pool; on this pool only the "
                "task's soft and hard time limits apply"
            )
        yield
        return

    def expired(signum: int, frame: FrameType | None) -> None:
        raise HandlerTimeLimit(f"handler {name!r} ran past its time limit of {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
