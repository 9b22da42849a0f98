"""Stopping the ingress's background tasks (the enqueuer's flusher, the headroom poller) without
letting a stop hang the shutdown.

A task is told to stop twice: by a flag its loop checks each turn (so a cancellation lost inside
a library, e.g. one that meets a timeout at the same instant and is taken for it, still ends the
loop at its next turn), then, unless it ended by itself within ``grace`` seconds (the enqueuer:
its batch in flight answered), by ``cancel()``. The wait for it is bounded: past ``seconds`` the
shutdown goes on with a warning naming the task, instead of waiting for ever (the process is
exiting; the task goes with it).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("uphooks.receiver")

#: How long a stop waits for a cancelled background task.
STOP_SECONDS = 5.0


async def stop_task(
    task: asyncio.Task[None], seconds: float = STOP_SECONDS, grace: float = 0.0
) -> None:
    """Give ``task`` (already told to stop) ``grace`` seconds to end, then cancel it and wait
    for it, at most ``seconds``. The caller's own cancellation is not swallowed: it propagates
    as usual."""
    if grace > 0 and not task.done():
        await asyncio.wait({task}, timeout=grace)
    if task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning(
            "background task %s did not stop within %g s of being cancelled; shutting down "
            "without it (if this repeats, report it with the log lines before it)",
            task.get_name(),
            seconds,
        )
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s ended with %r", task.get_name(), task.exception())
