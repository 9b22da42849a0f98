"""What the parts of :class:`uphooks.settings.Settings` share: units, and how a list is written
in one environment variable."""

from __future__ import annotations

HOUR = 3600
DAY = 24 * HOUR


def comma_list(value: object) -> object:
    """``"a, b,,c"`` as ``["a", "b", "c"]``; anything but a string (a list given in code, a
    default) as it is. For ``mode="before"`` validators of list fields."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
