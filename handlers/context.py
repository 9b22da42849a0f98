"""What a handler gets besides the event."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from uphooks import tracing


def _default_log() -> logging.LoggerAdapter[logging.Logger]:
    return logging.LoggerAdapter(logging.getLogger("uphooks.handler"), {})


@dataclass(frozen=True, init=False)
class Context:
    """Facts about one run of one handler on one delivery.

    Two keys, for two things:

    - ``delivery_key`` names the delivery (the event as the sender posted it, de-duplicated):
      the same for every handler; it is the ``delivery_key`` in the ingress's answer.
    - ``pair_key`` is ``<delivery_key>:<handler_name>``: unique per (delivery, handler) pair and
      the same on every attempt and redelivery. Pass it downstream (an ``Idempotency-Key``
      header, a unique column) so that an effect repeated after a crash still happens once.
      ``idempotency_key`` is its old name, kept for plugins written before (deprecated, as
      reading ``ctx.idempotency_key`` and as ``Context(idempotency_key=...)``).

    ``log`` is a logger whose lines carry the delivery key and the handler name. ``body`` is the
    request body exactly as the sender posted it (for forwarding or checksums); ``headers`` are
    the headers the ingress kept. ``source`` is ``"webhook"``, or ``"reconciled"`` for an
    event Upload-Post never sent that reconciliation read from its API (docs/reconciliation.md).
    ``span(name, **attributes)`` opens a child span of the run's trace (docs/operations.md,
    "Traces").
    """

    pair_key: str
    delivery_key: str
    handler_name: str
    attempt: int
    event_name: str
    received_at: float
    headers: Mapping[str, str]
    log: logging.LoggerAdapter[logging.Logger]
    body: str
    source: str

    def __init__(
        self,
        pair_key: str = "",
        delivery_key: str = "",
        handler_name: str = "",
        attempt: int = 1,
        event_name: str = "",
        received_at: float = 0.0,
        headers: Mapping[str, str] | None = None,
        log: logging.LoggerAdapter[logging.Logger] | None = None,
        body: str = "",
        source: str = "webhook",
        *,
        idempotency_key: str | None = None,
    ) -> None:
        # Written out (not the dataclass's) only to take ``idempotency_key=``, the old name.
        if idempotency_key is not None:
            warnings.warn(
                "Context(idempotency_key=...) is deprecated: write Context(pair_key=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            pair_key = pair_key or idempotency_key
        if not (pair_key and delivery_key and handler_name):
            raise TypeError("Context needs pair_key, delivery_key and handler_name")
        for name, value in (
            ("pair_key", pair_key),
            ("delivery_key", delivery_key),
            ("handler_name", handler_name),
            ("attempt", attempt),
            ("event_name", event_name),
            ("received_at", received_at),
            ("headers", {} if headers is None else headers),
            ("log", _default_log() if log is None else log),
            ("body", body),
            ("source", source),
        ):
            object.__setattr__(self, name, value)

    @property
    def idempotency_key(self) -> str:
        """Deprecated: the old name of :attr:`pair_key` (the same value)."""
        warnings.warn(
            "ctx.idempotency_key is deprecated: it is ctx.pair_key (<delivery key>:<handler>)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.pair_key

    def span(
        self, name: str, **attributes: str | int | float | bool
    ) -> AbstractContextManager[Any]:
        """A child span of this run's span, ``with ctx.span("crm.update", customer=id):``.

        An OpenTelemetry span when ``UPHOOKS_TRACING`` is on (it yields the span), a no-op
        yielding None otherwise."""
        return tracing.span(name, attributes)


class _KeyedAdapter(logging.LoggerAdapter[logging.Logger]):
    """Adds the delivery key and handler to each record as attributes (``extra``), beside the
    caller's own ``extra``; ``uphooks/logs.py`` writes them out."""

    def process(self, msg: object, kwargs: MutableMapping[str, Any]) -> tuple[object, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def bound_logger(key: str, handler: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose lines carry the delivery key and handler, so one grep follows a delivery."""
    context = {"delivery_key": key, "handler": handler}
    return _KeyedAdapter(logging.getLogger("uphooks.handler"), context)
