"""Which handler runs for which event: the router and the ``@on`` decorator."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from handlers.context import Context
from handlers.rates import Rate, parse_rates
from uphooks.errors import ConfigurationError

HandlerFunc = Callable[[Any, Context], object]
#: ``ordered_by=`` as a function: the typed event -> its ordering key (None: not ordered).
OrderFunc = Callable[[Any], "str | None"]
F = TypeVar("F", bound=HandlerFunc)

ANY_EVENT = "*"


def _result_success(payload: Mapping[str, Any]) -> object:
    result = payload.get("result")
    return result.get("success") if isinstance(result, Mapping) else None


#: Filters ``@on`` understands: name -> how to read the value from the payload.
FILTERS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "platform": lambda p: p.get("platform"),
    "profile": lambda p: p.get("profile_username"),
    "account": lambda p: p.get("account_name"),
    "status": lambda p: p.get("status"),
    "success": _result_success,
}

#: The type a filter's values must have.
_FILTER_TYPES: dict[str, type] = {"success": bool}

_ACCOUNT_FILTERS = frozenset({"platform", "profile", "account", "status"})
#: Which filters can match each documented event. A newer event name (not listed) may carry
#: any field, so every filter is allowed for it and for ``"*"``.
FILTERS_BY_EVENT: dict[str, frozenset[str]] = {
    "upload_completed": frozenset({"platform", "profile", "success"}),
    "social_account_connected": _ACCOUNT_FILTERS,
    "social_account_disconnected": _ACCOUNT_FILTERS,
    "social_account_reauth_required": _ACCOUNT_FILTERS,
}


def _account_order(payload: Mapping[str, Any]) -> str | None:
    platform, account = payload.get("platform"), payload.get("account_name")
    return f"{platform}:{account}" if platform and account else None


def _upload_order(payload: Mapping[str, Any]) -> str | None:
    job = payload.get("job_id") or payload.get("request_id")
    platform = payload.get("platform")
    return f"{platform}:{job}" if platform and job else None


#: ``ordered_by=`` names: the events they fit and how the key is read from the payload.
ORDERINGS: dict[str, tuple[frozenset[str], Callable[[Mapping[str, Any]], str | None]]] = {
    "account": (frozenset(FILTERS_BY_EVENT) - {"upload_completed"}, _account_order),
    "upload": (frozenset({"upload_completed"}), _upload_order),
}


class Backoff(NamedTuple):
    """Full-jitter exponential backoff: attempt n waits up to ``min(max, base * 2**(n-1))`` s."""

    base: float
    max: float


@dataclass(frozen=True)
class HandlerSpec:
    """One registered handler. ``None`` options mean "the worker's default" (see Settings)."""

    name: str
    func: HandlerFunc
    events: frozenset[str]
    filters: Mapping[str, frozenset[object]]
    max_attempts: int | None = None
    backoff: Backoff | None = None
    queue: str | None = None
    time_limit: float | None = None
    ordered_by: str | OrderFunc | None = None
    #: bucket name -> limit (handlers/rates.py); empty: not limited
    rate: Mapping[str, Rate] = field(default_factory=dict)
    #: ``async def`` handlers: calls of this handler at once per worker process (None: any)
    concurrency: int | None = None

    @property
    def is_async(self) -> bool:
        """An ``async def`` handler: run on the worker process's event loop (workers/aio.py)."""
        return inspect.iscoroutinefunction(self.func)

    def wants(self, event_name: str, payload: Mapping[str, Any]) -> bool:
        if ANY_EVENT not in self.events and event_name not in self.events:
            return False
        return all(FILTERS[f](payload) in allowed for f, allowed in self.filters.items())

    def order_key(self, payload: Mapping[str, Any], event: Callable[[], Any]) -> str | None:
        """The ordering key of this handler's pair for one event (None: not ordered).

        ``event`` builds the typed event; it is called only for an ``ordered_by`` function."""
        if self.ordered_by is None:
            return None
        if isinstance(self.ordered_by, str):
            return ORDERINGS[self.ordered_by][1](payload)
        key = self.ordered_by(event())
        return None if key is None else str(key)


def _allowed(field: str, value: object) -> frozenset[object]:
    values: Collection[object]
    if isinstance(value, str | bool | int) or value is None:
        values = (value,)
    elif isinstance(value, Collection):
        values = value
    else:
        raise ConfigurationError(
            f"filter {field}={value!r}: give a value or a collection of values"
        )
    wanted = _FILTER_TYPES.get(field, str)
    for item in values:
        if not isinstance(item, wanted):
            raise ConfigurationError(
                f"filter {field}={value!r}: values must be {wanted.__name__}, "
                f"got {type(item).__name__}"
            )
    if not values:
        raise ConfigurationError(f"filter {field}={value!r} is empty and can never match")
    return frozenset(values)


def _check_filters_can_match(events: tuple[str, ...], filters: Mapping[str, object]) -> None:
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise ConfigurationError(
            f"@on() got unknown filter(s) {unknown}; known filters: {sorted(FILTERS)}"
        )
    for event in events:
        usable = FILTERS_BY_EVENT.get(event)
        if usable is None:
            continue
        useless = sorted(set(filters) - usable)
        if useless:
            raise ConfigurationError(
                f"@on({event!r}, ...): {event} events have no {useless} field, so the filter "
                f"can never match; filters for {event}: {sorted(usable)}"
            )


def _check_ordering(events: tuple[str, ...], ordered_by: str | OrderFunc | None) -> None:
    if ordered_by is None or callable(ordered_by):
        return
    if ordered_by not in ORDERINGS:
        raise ConfigurationError(
            f"ordered_by={ordered_by!r}: give {' or '.join(map(repr, ORDERINGS))}, or a function "
            "of the event returning its ordering key"
        )
    fits = ORDERINGS[ordered_by][0]
    wrong = sorted(e for e in events if e in FILTERS_BY_EVENT and e not in fits)
    if wrong:
        raise ConfigurationError(
            f"ordered_by={ordered_by!r} does not fit {wrong}: those events have no "
            f"{ordered_by} to order by; it fits {sorted(fits)}"
        )


def _check_options(
    max_attempts: int | None,
    backoff: tuple[float, float] | None,
    queue: str | None,
    time_limit: float | None,
) -> Backoff | None:
    if max_attempts is not None and max_attempts < 1:
        raise ConfigurationError("max_attempts must be 1 or more")
    if queue is not None and (not queue or any(c in queue for c in ", \t")):
        raise ConfigurationError(f"queue {queue!r} must be a non-empty name without ',' or spaces")
    if time_limit is not None and time_limit <= 0:
        raise ConfigurationError("time_limit must be a positive number of seconds")
    if backoff is None:
        return None
    base, cap = backoff
    if base <= 0 or cap < base:
        raise ConfigurationError(f"backoff={backoff!r} must be (base, max) with 0 < base <= max")
    return Backoff(float(base), float(cap))


class Router:
    """A set of handlers. ``Router(a, b)`` holds the handlers of both ``a`` and ``b``."""

    def __init__(self, *routers: Router) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        for router in routers:
            for spec in router:
                self.add(spec)

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def add(self, spec: HandlerSpec) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ConfigurationError(
                f"two handlers are named {spec.name!r}; give one of them another name with "
                "@on(..., name='...')"
            )
        self._specs[spec.name] = spec

    def on(
        self,
        *events: str,
        name: str | None = None,
        max_attempts: int | None = None,
        backoff: tuple[float, float] | None = None,
        queue: str | None = None,
        time_limit: float | None = None,
        ordered_by: str | OrderFunc | None = None,
        rate: str | Mapping[str, str] | None = None,
        concurrency: int | None = None,
        **filters: object,
    ) -> Callable[[F], F]:
        """Register ``fn(event, ctx)`` for the named events (``"*"`` for all of them).

        Filters narrow it down: ``platform``, ``profile``, ``account``, ``status`` (a string or
        a collection of strings) and ``success`` (True/False, for ``upload_completed``). A filter
        that cannot match one of the named events is a ConfigurationError.

        Options (``None`` takes the worker's default from the ``UPHOOKS_*`` settings):
        ``max_attempts`` runs before the event is dead-lettered for this handler; ``backoff``
        ``(base, max)`` seconds between attempts; ``queue`` the Celery queue the handler runs
        on (start workers for it with ``uphooks worker -Q <queue>``); ``time_limit`` seconds
        per call, after which the call is interrupted and counts as a failed attempt.

        ``ordered_by`` runs this handler's events one at a time per key, in the order they
        happened (``created_at``, then receipt), across all workers: ``"account"`` (platform and
        account name), ``"upload"`` (job id and platform) or a function of the typed event that
        returns a key (None: that event is not ordered). A failing event holds the ones behind
        it for its key until it is done or dead-lettered; see docs/design.md section 9.

        ``rate`` limits how often the handler runs, across all workers: ``"30/s"`` (see
        handlers/rates.py) or ``{"bucket": "1/s", ...}`` for buckets shared with other
        handlers. A run over its limit waits in Redis, without a worker slot or an attempt.
        ``concurrency`` bounds the calls of an ``async def`` handler at once per process.

        The name (default ``module.function``) keys idempotency markers and dead letters:
        renaming a handler makes it a new handler that has seen nothing.
        """
        if not events:
            raise ConfigurationError("@on() needs at least one event name, or '*'")
        _check_filters_can_match(events, filters)
        _check_ordering(events, ordered_by)
        checked_backoff = _check_options(max_attempts, backoff, queue, time_limit)
        allowed = {k: _allowed(k, v) for k, v in filters.items()}

        def register(func: F) -> F:
            handler_name = name or f"{func.__module__}.{func.__qualname__}"
            if not handler_name or "|" in handler_name:
                raise ConfigurationError(f"handler name {handler_name!r} must be non-empty, no '|'")
            if concurrency is not None and (
                concurrency < 1 or not inspect.iscoroutinefunction(func)
            ):
                raise ConfigurationError(
                    f"handler {handler_name!r}: concurrency= is for async def handlers, 1 or more"
                )
            self.add(
                HandlerSpec(
                    name=handler_name,
                    func=func,
                    events=frozenset(events),
                    filters=allowed,
                    max_attempts=max_attempts,
                    backoff=checked_backoff,
                    queue=queue,
                    time_limit=time_limit,
                    ordered_by=ordered_by,
                    rate=parse_rates(handler_name, rate),
                    concurrency=concurrency,
                )
            )
            return func

        return register

    def get(self, name: str) -> HandlerSpec | None:
        return self._specs.get(name)

    def handlers_for(self, event_name: str, payload: Mapping[str, Any]) -> list[HandlerSpec]:
        return [spec for spec in self._specs.values() if spec.wants(event_name, payload)]


#: The router ``@on`` registers to; the worker always includes it.
default_router = Router()
on = default_router.on
