"""What ``@on`` filters on: each filter names a field of the payload; the event catalogue
(``uphooks/events.py``) says which documented event carries it, so a filter that can never
match is refused when the handler is registered."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from uphooks.errors import ConfigurationError
from uphooks.events import CATALOGUE


@dataclass(frozen=True)
class Filter:
    #: The payload field it reads, nested ones dotted (``result.success``).
    field: str
    #: The type its values must have.
    type: type = str
    _path: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_path", tuple(self.field.split(".")))  # read on every delivery

    def read(self, payload: Mapping[str, Any]) -> object:
        value: object = payload
        for part in self._path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value


#: Filters ``@on`` understands: name -> the field it reads.
FILTERS: dict[str, Filter] = {
    "platform": Filter("platform"),
    "profile": Filter("profile_username"),
    "account": Filter("account_name"),
    "status": Filter("status"),
    "success": Filter("result.success", bool),
}

#: Which filters can match each documented event: those whose field its model declares. A newer
#: event name (not listed) may carry any field, so every filter is allowed for it and for "*".
FILTERS_BY_EVENT: dict[str, frozenset[str]] = {
    name: frozenset(f for f, spec in FILTERS.items() if spec.field in kind.fields)
    for name, kind in CATALOGUE.items()
}


def allowed_values(name: str, value: object) -> frozenset[object]:
    """The values a filter accepts, from ``platform="x"`` or ``platform=["x", "y"]``."""
    values: Collection[object]
    if isinstance(value, str | bool | int) or value is None:
        values = (value,)
    elif isinstance(value, Collection):
        values = value
    else:
        raise ConfigurationError(f"filter {name}={value!r}: give a value or a collection of values")
    wanted = FILTERS[name].type
    for item in values:
        if not isinstance(item, wanted):
            raise ConfigurationError(
                f"filter {name}={value!r}: values must be {wanted.__name__}, "
                f"got {type(item).__name__}"
            )
    if not values:
        raise ConfigurationError(f"filter {name}={value!r} is empty and can never match")
    return frozenset(values)


def check_filters(events: tuple[str, ...], filters: Mapping[str, object]) -> None:
    """Refuse a filter that is unknown or that one of the named events can never match."""
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
