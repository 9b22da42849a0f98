"""The plugin API. The whole of it fits here; docs/handlers.md is the guide.

.. code-block:: python

    from handlers import Context, Options, UploadCompleted, on

    @on("upload_completed", platform="tiktok", success=False, options=Options(queue="slow"))
    def tell_support(event: UploadCompleted, ctx: Context) -> None:
        ctx.log.info("failed: %s", event.result.error)
        crm.create_ticket(..., idempotency_key=ctx.pair_key)

- ``on(*events, name=None, options=None, **filters)`` registers ``fn(event, ctx)``, a plain
  function or an ``async def`` (run on the worker's event loop, many at once). Events are names
  or ``"*"``; every other keyword is a filter: ``platform``, ``profile``, ``account``,
  ``status`` and ``success``.
- ``Options(max_attempts=, backoff=(base, max), queue=, time_limit=, ordered_by=, rate=,
  concurrency=)`` says how the handler runs; ``None`` (the default) takes the worker's setting.
  ``ordered_by="account" | "upload" | fn(event) -> key`` runs events of one key in order;
  ``rate="30/s"`` limits it across all workers; ``concurrency`` bounds an async handler's calls
  per process.
- ``Router`` groups handlers; a plugin module may expose ``router = Router()`` and use
  ``@router.on(...)`` instead of the global ``on``.
- ``Context`` is the second argument: ``pair_key`` (``<delivery_key>:<handler_name>``, the key to
  pass downstream), ``delivery_key``, ``log`` (bound to the delivery), ``attempt``,
  ``handler_name``, ``event_name``, ``body``. ``idempotency_key`` is the old name of ``pair_key``.
- Raise ``TransientError`` (optionally ``retry_after=`` seconds) to be retried with backoff,
  ``PermanentError`` to be dead-lettered now; any other exception counts as transient. A plugin
  that cannot work with its settings raises ``ConfigurationError``: the worker does not start.
- The event classes below are the typed models handlers receive (``AccountEvent`` is any of the
  three account events; ``UnknownEvent`` for event names this release does not model).
"""

from handlers.context import Context
from handlers.errors import PermanentError, TransientError
from handlers.options import Options
from handlers.registry import Router, on
from uphooks.errors import ConfigurationError
from uphooks.events import (
    AccountEvent,
    BaseEvent,
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountReauthRequired,
    UnknownEvent,
    UploadCompleted,
)

__all__ = [
    "AccountEvent",
    "BaseEvent",
    "ConfigurationError",
    "Context",
    "Options",
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
