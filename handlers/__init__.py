"""The plugin API: write ``@on("upload_completed") def fn(event, ctx): ...`` in your module.

- ``on(*events, name=None, max_attempts=None, **filters)`` registers a handler.
- ``Router`` groups handlers; a plugin module may expose ``router = Router()`` instead of ``on``.
- ``Context`` is the second argument: ``idempotency_key``, ``attempt``, ``handler_name``, ``log``.
- Raise ``TransientError`` to be retried with backoff, ``PermanentError`` to be dead-lettered now;
  any other exception counts as transient.
"""

from handlers.context import Context
from handlers.errors import HandlerError, PermanentError, TransientError
from handlers.registry import ANY_EVENT, HandlerSpec, Router, default_router, on
from uphooks.events import (
    BaseEvent,
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountReauthRequired,
    UnknownEvent,
    UploadCompleted,
)

__all__ = [
    "ANY_EVENT",
    "BaseEvent",
    "Context",
    "HandlerError",
    "HandlerSpec",
    "PermanentError",
    "Router",
    "SocialAccountConnected",
    "SocialAccountDisconnected",
    "SocialAccountReauthRequired",
    "TransientError",
    "UnknownEvent",
    "UploadCompleted",
    "default_router",
    "on",
]
