"""What the parts of :class:`uphooks.settings.Settings` share: units, how a list is written in one
environment variable, what a base URL may be."""

from __future__ import annotations

HOUR = 3600
DAY = 24 * HOUR


def comma_list(value: object) -> object:
    """``"a, b,,c"`` as ``["a", "b", "c"]``; anything but a string (a list given in code, a
    default) as it is. For ``mode="before"`` validators of list fields."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def base_url(value: str | None) -> str | None:
    """An http(s) URL without its trailing slash; empty as None. For URL fields' validators."""
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return value.rstrip("/")
