"""How a handler runs: ``@on(..., options=Options(queue="slow", max_attempts=5))``.

Every option is ``None`` by default, which means "the worker's default" (the ``UPHOOKS_*``
settings). Options are checked when the handler is registered, so a plugin with an impossible
option fails at import, naming it.

Adding an option: give :class:`Options` a field defaulting to ``None``, check it in
``__post_init__`` (raise ``ConfigurationError`` saying what to write instead), read it in the
worker as ``spec.options.<field>``, and show it in ``workers/plugins.py``'s ``describe``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from handlers.rates import parse_rates
from uphooks.errors import ConfigurationError
from uphooks.events import ACCOUNT_EVENTS, CATALOGUE

#: ``ordered_by=`` as a function: the typed event -> its ordering key (None: not ordered).
OrderFunc = Callable[[Any], "str | None"]


class Backoff(NamedTuple):
    """Full-jitter exponential backoff: attempt n waits up to ``min(max, base * 2**(n-1))`` s."""

    base: float
    max: float


def _account_order(payload: Mapping[str, Any]) -> str | None:
    platform, account = payload.get("platform"), payload.get("account_name")
    return f"{platform}:{account}" if platform and account else None


def _upload_order(payload: Mapping[str, Any]) -> str | None:
    job = payload.get("job_id") or payload.get("request_id")
    platform = payload.get("platform")
    return f"{platform}:{job}" if platform and job else None


class Ordering(NamedTuple):
    fits: frozenset[str]  # the documented events it can order
    key: Callable[[Mapping[str, Any]], str | None]  # payload -> ordering key


#: ``ordered_by=`` names: the events they fit and how the key is read from the payload.
ORDERINGS: dict[str, Ordering] = {
    "account": Ordering(frozenset(ACCOUNT_EVENTS), _account_order),
    "upload": Ordering(
        frozenset(name for name, kind in CATALOGUE.items() if "job_id" in kind.fields),
        _upload_order,
    ),
}


@dataclass(frozen=True, kw_only=True)
class Options:
    """A handler's options; ``None`` takes the worker's default from the settings.

    - ``max_attempts``: runs before the event is dead-lettered for this handler
      (``UPHOOKS_RETRY_MAX_ATTEMPTS``);
    - ``backoff``: ``(base, max)`` seconds between attempts, full jitter
      (``UPHOOKS_RETRY_BASE_DELAY_SECONDS``, ``UPHOOKS_RETRY_MAX_DELAY_SECONDS``);
    - ``queue``: the Celery queue the handler runs on (``UPHOOKS_QUEUE``; start workers for it
      with ``uphooks worker -Q <queue>``);
    - ``time_limit``: seconds per call, after which the call is interrupted and counts as a
      failed attempt (none: the message's soft limit);
    - ``ordered_by``: run events of one key one at a time, in the order they happened:
      ``"account"``, ``"upload"`` or a function of the typed event returning its key;
    - ``rate``: how often it may run, across all workers: ``"30/s"`` (a bucket of this
      handler) or ``{"bucket": "1/s", ...}`` (buckets shared with other handlers; a run needs a
      token from each; handlers/rates.py). A run over its limit waits in Redis, without a
      worker slot or an attempt (workers/rate_limits.py);
    - ``concurrency``: an ``async def`` handler's calls at once per worker process (none:
      up to ``UPHOOKS_ASYNC_CONCURRENCY``, workers/aio.py).
    """

    max_attempts: int | None = None
    backoff: tuple[float, float] | None = None
    queue: str | None = None
    time_limit: float | None = None
    ordered_by: str | OrderFunc | None = None
    rate: str | Mapping[str, str] | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be 1 or more")
        queue = self.queue
        if queue is not None and (not queue or any(c in queue for c in ", \t")):
            raise ConfigurationError(
                f"queue {queue!r} must be a non-empty name without ',' or spaces"
            )
        if self.time_limit is not None and self.time_limit <= 0:
            raise ConfigurationError("time_limit must be a positive number of seconds")
        if self.backoff is not None:
            base, cap = self.backoff
            if base <= 0 or cap < base:
                raise ConfigurationError(
                    f"backoff={self.backoff!r} must be (base, max) with 0 < base <= max"
                )
            object.__setattr__(self, "backoff", Backoff(float(base), float(cap)))
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigurationError("concurrency must be 1 or more")
        parse_rates("-", self.rate)  # refused here, naming the limit
        ordered_by = self.ordered_by
        if ordered_by is not None and not callable(ordered_by) and ordered_by not in ORDERINGS:
            raise ConfigurationError(
                f"ordered_by={ordered_by!r}: give {' or '.join(map(repr, ORDERINGS))}, or a "
                "function of the event returning its ordering key"
            )

    def check_events(self, events: tuple[str, ...]) -> None:
        """Refuse an ``ordered_by`` name that does not fit one of the handler's events."""
        if self.ordered_by is None or callable(self.ordered_by):
            return
        fits = ORDERINGS[self.ordered_by].fits
        wrong = sorted(e for e in events if e in CATALOGUE and e not in fits)
        if wrong:
            raise ConfigurationError(
                f"ordered_by={self.ordered_by!r} does not fit {wrong}: those events have no "
                f"{self.ordered_by} to order by; it fits {sorted(fits)}"
            )


#: The options ``@on`` still takes as keywords (deprecated; see ``handlers/registry.py``).
KEYWORD_OPTIONS = ("max_attempts", "backoff", "queue", "time_limit", "ordered_by")
