"""When a failed handler runs again, and how the waiting is kept safe.

The decision: a retry is a *new Celery message* for that handler alone (``only=[handler]``),
published before the current message is acknowledged, with ``not_before`` = when it is due.

Why not one long ``countdown``: the sender itself retries for ~8.5 h, so our backoff may span
hours, but on Redis a message with a countdown sits unacknowledged in a worker, and kombu hands
any message unacknowledged longer than the visibility timeout to a second worker (a duplicate).
So a delay longer than ``retry_hop_seconds`` (kept below the visibility timeout by Settings) is
waited out in hops: the message comes due after at most one hop, sees ``not_before`` is still
ahead, and republishes itself for the next hop. Nothing waits only in a worker's memory: a waiting
message is always in Redis (queued, or in kombu's unacked set, which is restored if its worker
dies).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from uphooks.settings import Settings


def backoff_delay(base: float, maximum: float, attempt: int, floor: float | None = None) -> float:
    """Full-jitter exponential backoff before attempt ``attempt + 1``."""
    ceiling = min(maximum, base * 2 ** max(attempt - 1, 0))
    delay = random.uniform(0, ceiling)
    return max(delay, floor or 0.0)


def hop(settings: Settings, not_before: float, now: float | None = None) -> float:
    """The countdown of the next hop towards ``not_before``: never longer than one hop."""
    remaining = not_before - (now if now is not None else time.time())
    return max(0.0, min(remaining, float(settings.retry_hop_seconds)))


#: Publishing to Redis: retried for a while inside the task, since giving up means the message
#: goes back to the queue (Reject) and the whole batch is looked at again.
publish_with_retries: Callable[[Callable[..., Any]], Callable[..., Any]] = retry(
    retry=retry_if_exception_type(Exception),
    wait=wait_exponential(multiplier=0.1, max=2),
    stop=stop_after_delay(20),
    reraise=True,
)
