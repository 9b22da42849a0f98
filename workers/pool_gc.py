"""The cyclic garbage collector in a prefork pool child: what it inherited is frozen, and a full
collection comes at least every ``UPHOOKS_POOL_FULL_COLLECTION_SECONDS``, after a task.

Why (docs/perf-notes/memory.md: the pool children's memory crept while bare Celery's did not):

- A child inherits the parent's heap (the imports: ~90,000 tracked objects) as its oldest
  generation, whose full collection waits until a quarter as many again have been promoted
  into it: tens of minutes under load. Meanwhile every reference cycle that lived through two
  younger collections stays, with all it holds. Frozen (``gc.freeze``), the inherited objects
  are left out: they are the parent's, alive for the process's life, and a full collection of
  the child's own objects then takes well under a millisecond instead of ~70 ms.
- CPython keeps freed tuples (up to 2,000 of each length from 1 to 20), floats, lists and dicts
  on free lists for reuse, and only a full collection empties them. Tuples flow onto those
  lists a little with every message, so without full collections they grew by up to a few MB,
  which stayed the process's.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from uphooks.settings import Settings

_every = 0.0
_next = 0.0
_frozen_in = 0  # the pid that froze its inheritance


def _freeze_inherited(**_: Any) -> None:
    global _next, _frozen_in
    gc.freeze()
    _next = time.monotonic() + _every
    _frozen_in = os.getpid()


def _collect_now_and_then(**_: Any) -> None:
    """After a task in a child that froze its inheritance (never in the main process)."""
    global _next
    # Not gc.get_freeze_count(): it walks every frozen object on each call (0.7 ms for 50,000
    # here; ~10 ms per task in a busy -P solo worker, py-spy: half its CPU).
    if not _every or _frozen_in != os.getpid():
        return
    now = time.monotonic()
    if now >= _next:
        _next = now + _every
        gc.collect()


def install(settings: Settings) -> None:
    """Call once where the Celery app's signals are wired (``workers/tasks.py``)."""
    from celery import signals

    global _every
    _every = settings.pool_full_collection_seconds
    signals.worker_process_init.connect(_freeze_inherited, weak=False)
    signals.task_postrun.connect(_collect_now_and_then, weak=False)
