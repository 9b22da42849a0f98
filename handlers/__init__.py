"""The plugin API. The whole of it fits here; docs/handlers.md is the guide.

.. code-block:: python

    from handlers import Context, PermanentError, TransientError, UploadCompleted, on

    @on("upload_completed", platform="tiktok", success=False, max_attempts=5, queue="slow")
    def tell_support(event: UploadCompleted, ctx: Context) -> None:
        ctx.log.info("failed: %s", event.result.error)
        crm.create_ticket(..., idempotency_key=ctx.idempotency_key)

- ``on(*events, name=, max_attempts=, backoff=(base, max), queue=, time_limit=, ordered_by=,
  **filters)`` registers a plain function ``fn(event, ctx)``. Events are names or ``"*"``;
  filters are ``platform``, ``profile``, ``account``, ``status`` and ``success``;
  ``ordered_by="account" | "upload" | fn(event) -> key`` runs events of one key in order.
- ``Router`` groups handlers; a plugin module may expose ``router = Router()`` and use
  ``@router.on(...)`` instead of the global ``on``.
- ``Context`` is the second argument: ``idempotency_key`` (pass it downstream), ``log`` (bound to
  the delivery), ``attempt``, ``handler_name``, ``delivery_key``, ``event_name``, ``body``.
- Raise ``TransientError`` (optionally ``retry_after=`` seconds) to be retried with backoff,
  ``PermanentError`` to be dead-lettered now; any other exception counts as transient.
- The event classes below are the typed models handlers receive (``UnknownEvent`` for event
  names this release does not model).
"""

from handlers.context import Context
from handlers.errors import PermanentError, TransientError
from handlers.registry import Router, on
from uphooks.events import (
    BaseEvent,
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountReauthRequired,
    UnknownEvent,
    UploadCompleted,
)

__all__ = [
    "BaseEvent",
    "Context",
    "PermanentError",
    "Router",
    "SocialAccountConnected",
    "SocialAccountDisconnected",
    "SocialAccountReauthRequired",
    "TransientError",
    "UnknownEvent",
    "UploadCompleted",
    "on",
]
