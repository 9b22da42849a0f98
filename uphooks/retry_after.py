"""How long an HTTP answer's ``Retry-After`` header asks to wait: read by the built-in handlers'
HTTP calls (handlers/_http.py) and the provider's read-back client (uphooks/readback.py)."""

from __future__ import annotations

import email.utils
import time

import httpx


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
