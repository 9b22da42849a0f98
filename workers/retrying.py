"""What a failed run comes to: retried later, or dead. Decided here and nowhere else.

``RetryPolicy.decide(spec, attempt, error)`` answers :class:`Retry` (with when it is due) or
:class:`Dead`:

- :class:`~handlers.errors.PermanentError`: dead at once; retrying cannot help.
- any other exception: retried with exponential backoff and full jitter, from the handler's
  ``backoff=(base, max)`` or ``UPHOOKS_RETRY_BASE_DELAY_SECONDS`` /
  ``UPHOOKS_RETRY_MAX_DELAY_SECONDS``, until its ``max_attempts`` (or
  ``UPHOOKS_RETRY_MAX_ATTEMPTS``) is used up; then dead.
- a :class:`~handlers.errors.TransientError` with ``retry_after`` (a ``Retry-After`` header, a
  Telegram ``retry_after``) is never retried sooner than that.

A retry waits in the ledger's schedule in Redis (workers/schedule.py), not in a worker, so a
delay may be hours long: no visibility timeout limits it and no worker holds it.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from handlers.errors import PermanentError, TransientError
from handlers.registry import HandlerSpec
from uphooks.settings import Settings


@dataclass(frozen=True)
class Retry:
    due: float  # unix time


@dataclass(frozen=True)
class Dead:
    reason: str  # "permanent" or "attempts"


def backoff_delay(base: float, maximum: float, attempt: int, floor: float | None = None) -> float:
    """Full-jitter exponential backoff before attempt ``attempt + 1``."""
    ceiling = min(maximum, base * 2 ** max(attempt - 1, 0))
    delay = random.uniform(0, ceiling)
    return max(delay, floor or 0.0)


class RetryPolicy:
    def __init__(self, settings: Settings) -> None:
        self._s = settings

    def max_attempts(self, spec: HandlerSpec) -> int:
        return spec.max_attempts or self._s.retry_max_attempts

    def decide(
        self, spec: HandlerSpec, attempt: int, error: BaseException, now: float | None = None
    ) -> Retry | Dead:
        if isinstance(error, PermanentError):
            return Dead("permanent")
        if attempt >= self.max_attempts(spec):
            return Dead("attempts")
        if spec.backoff is None:
            base, maximum = self._s.retry_base_delay_seconds, self._s.retry_max_delay_seconds
        else:
            base, maximum = spec.backoff.base, spec.backoff.max
        floor = error.retry_after if isinstance(error, TransientError) else None
        now = time.time() if now is None else now
        return Retry(now + backoff_delay(base, maximum, attempt, floor))


#: Writes to Redis on the way out of a task: retried for a while inside the task, since giving
#: up means the message goes back to the queue (Reject) and is looked at again.
_redis_retries: Callable[[Callable[..., Any]], Callable[..., Any]] = retry(
    retry=retry_if_exception_type(Exception),
    wait=wait_exponential(multiplier=0.1, max=2),
    stop=stop_after_delay(20),
    reraise=True,
)
#: The first wait of that policy, before tenacity takes over a call that failed.
_FIRST_WAIT = 0.1


def with_redis_retries(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` retried on any exception with backoff for about 20 s, then the last one raised.

    The first attempt is a plain call: tenacity only takes over once it failed. Each call
    through tenacity makes a reference cycle (its per-call ``Retrying`` copy) holding the
    call's arguments and result until the cyclic GC comes by, which a pool child made rare;
    there, they piled up by the megabyte (docs/perf-notes/memory.md). Redis calls succeed
    almost always, so almost no call makes one now; the tenacity wrapper (a cycle too) is
    made only for a call that failed.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            time.sleep(_FIRST_WAIT)
        return _redis_retries(fn)(*args, **kwargs)

    return call
