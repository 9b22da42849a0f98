"""Which handler runs for which event: the router and the ``@on`` decorator."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from handlers.context import Context
from uphooks.errors import ConfigurationError

HandlerFunc = Callable[[Any, Context], object]
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


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    func: HandlerFunc
    events: frozenset[str]
    filters: Mapping[str, frozenset[object]]
    max_attempts: int | None = None

    def wants(self, event_name: str, payload: Mapping[str, Any]) -> bool:
        if ANY_EVENT not in self.events and event_name not in self.events:
            return False
        return all(FILTERS[f](payload) in allowed for f, allowed in self.filters.items())


def _allowed(value: object) -> frozenset[object]:
    if isinstance(value, str | bool | int) or value is None:
        return frozenset({value})
    if isinstance(value, Collection):
        return frozenset(value)
    raise ConfigurationError(f"filter value {value!r} must be a string, a bool or a collection")


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
        **filters: object,
    ) -> Callable[[F], F]:
        """Register ``fn(event, ctx)`` for the named events (``"*"`` for all of them).

        Filters narrow it down: ``platform``, ``profile``, ``account``, ``status`` (a value or a
        collection of values) and ``success`` (True/False, for ``upload_completed``). The name
        (default ``module.function``) keys idempotency markers and dead letters: renaming a
        handler makes it a new handler that has seen nothing.
        """
        if not events:
            raise ConfigurationError("@on() needs at least one event name, or '*'")
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise ConfigurationError(
                f"@on() got unknown filter(s) {unknown}; known filters: {sorted(FILTERS)}"
            )
        if max_attempts is not None and max_attempts < 1:
            raise ConfigurationError("max_attempts must be 1 or more")

        def register(func: F) -> F:
            self.add(
                HandlerSpec(
                    name=name or f"{func.__module__}.{func.__qualname__}",
                    func=func,
                    events=frozenset(events),
                    filters={k: _allowed(v) for k, v in filters.items()},
                    max_attempts=max_attempts,
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
