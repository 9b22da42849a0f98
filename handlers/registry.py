"""Which handler runs for which event: the router and the ``@on`` decorator.

``@on(*events, name=None, options=None, **filters)``: the events, the handler's stable name, how
it runs (:class:`~handlers.options.Options`) and what it wants (filters, ``handlers/filters.py``).
Every other keyword is a filter, so options live in ``options=`` and never share that namespace.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from handlers.context import Context
from handlers.filters import FILTERS, FILTERS_BY_EVENT, allowed_values, check_filters
from handlers.options import KEYWORD_OPTIONS, ORDERINGS, Backoff, Options, OrderFunc
from handlers.rates import Rate, parse_rates
from uphooks.errors import ConfigurationError

__all__ = [
    "ANY_EVENT",
    "FILTERS",
    "FILTERS_BY_EVENT",
    "Backoff",
    "HandlerFunc",
    "HandlerSpec",
    "Options",
    "OrderFunc",
    "Router",
    "default_router",
    "on",
]

HandlerFunc = Callable[[Any, Context], object]
F = TypeVar("F", bound=HandlerFunc)

ANY_EVENT = "*"


@dataclass(frozen=True)
class HandlerSpec:
    """One registered handler: its name, function, events, filters and options."""

    name: str
    func: HandlerFunc
    events: frozenset[str]
    filters: Mapping[str, frozenset[object]]
    options: Options = field(default_factory=Options)
    #: ``options.rate`` read once: bucket name -> limit (handlers/rates.py); empty: no limit
    rate: Mapping[str, Rate] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        """An ``async def`` handler: run on the worker process's event loop (workers/aio.py)."""
        return inspect.iscoroutinefunction(self.func)

    @property
    def concurrency(self) -> int | None:
        return self.options.concurrency

    @property
    def max_attempts(self) -> int | None:
        return self.options.max_attempts

    @property
    def backoff(self) -> Backoff | None:
        backoff = self.options.backoff
        return None if backoff is None else Backoff(*backoff)

    @property
    def queue(self) -> str | None:
        return self.options.queue

    @property
    def time_limit(self) -> float | None:
        return self.options.time_limit

    @property
    def ordered_by(self) -> str | OrderFunc | None:
        return self.options.ordered_by

    def wants(self, event_name: str, payload: Mapping[str, Any]) -> bool:
        if ANY_EVENT not in self.events and event_name not in self.events:
            return False
        return all(FILTERS[f].read(payload) in allowed for f, allowed in self.filters.items())

    def order_key(self, payload: Mapping[str, Any], event: Callable[[], Any]) -> str | None:
        """The ordering key of this handler's pair for one event (None: not ordered).

        ``event`` builds the typed event; it is called only for an ``ordered_by`` function."""
        ordered_by = self.options.ordered_by
        if ordered_by is None:
            return None
        if isinstance(ordered_by, str):
            return ORDERINGS[ordered_by].key(payload)
        key = ordered_by(event())
        return None if key is None else str(key)


def _options(options: Options | None, filters: dict[str, object]) -> Options:
    """``options=``, plus the options still given as keywords (deprecated, popped from filters)."""
    # Untyped, as they came in **filters; Options checks their values.
    legacy: dict[str, Any] = {k: filters.pop(k) for k in list(filters) if k in KEYWORD_OPTIONS}
    if not legacy:
        return options or Options()
    given = ", ".join(f"{k}={v!r}" for k, v in legacy.items())
    warnings.warn(
        f"@on(..., {given}): options as keywords are deprecated and stop working in the next "
        f"release; write @on(..., options=Options({given})) (from handlers import Options)",
        DeprecationWarning,
        stacklevel=3,
    )
    if options is None:
        return Options(**legacy)
    both = sorted(k for k in legacy if getattr(options, k) is not None)
    if both:
        raise ConfigurationError(f"@on() got {both} both as keywords and in options=")
    return dataclasses.replace(options, **legacy)


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
        options: Options | None = None,
        **filters: object,
    ) -> Callable[[F], F]:
        """Register ``fn(event, ctx)`` for the named events (``"*"`` for all of them).

        Filters narrow it down: ``platform``, ``profile``, ``account``, ``status`` (a string or
        a collection of strings) and ``success`` (True/False, for ``upload_completed``). A filter
        that cannot match one of the named events is a ConfigurationError.

        ``options=Options(...)`` says how it runs (queue, retries, time limit, order; see
        :class:`~handlers.options.Options`); without it the worker's defaults apply.

        The name (default ``module.function``) keys idempotency markers and dead letters:
        renaming a handler makes it a new handler that has seen nothing.
        """
        if not events:
            raise ConfigurationError("@on() needs at least one event name, or '*'")
        filters = dict(filters)
        chosen = _options(options, filters)
        check_filters(events, filters)
        chosen.check_events(events)
        allowed = {k: allowed_values(k, v) for k, v in filters.items()}

        def register(func: F) -> F:
            handler_name = name or f"{func.__module__}.{func.__qualname__}"
            if not handler_name or "|" in handler_name:
                raise ConfigurationError(f"handler name {handler_name!r} must be non-empty, no '|'")
            if chosen.concurrency is not None and not inspect.iscoroutinefunction(func):
                raise ConfigurationError(
                    f"handler {handler_name!r}: concurrency= is for async def handlers"
                )
            self.add(
                HandlerSpec(
                    name=handler_name,
                    func=func,
                    events=frozenset(events),
                    filters=allowed,
                    options=chosen,
                    rate=parse_rates(handler_name, chosen.rate),
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
