"""How a handler tells the worker what went wrong."""

from __future__ import annotations

from uphooks.errors import UphooksError


class HandlerError(UphooksError):
    """Base class of the errors a handler raises on purpose."""


class TransientError(HandlerError):
    """Try again later (with backoff). Any exception that is not a HandlerError counts as this.

    ``retry_after`` (seconds) is a floor for the next delay, e.g. from a 429's ``Retry-After``.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(HandlerError):
    """Retrying cannot help: dead-letter this event for this handler now."""
