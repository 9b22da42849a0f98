"""What a handler gets besides the event."""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Context:
    """Facts about one run of one handler on one delivery.

    ``idempotency_key`` is unique per (delivery, handler) and the same on every attempt and
    redelivery: pass it downstream (an ``Idempotency-Key`` header, a unique column) so that an
    effect repeated after a crash still happens once.

    ``log`` is a logger whose lines carry the delivery key and the handler name. ``body`` is the
    request body exactly as the sender posted it (for forwarding or checksums); ``headers`` are
    the headers the ingress kept. ``source`` is ``"webhook"``, or ``"reconciled"`` for an
    event Upload-Post never sent that reconciliation read from its API (docs/reconciliation.md).
    """

    idempotency_key: str
    delivery_key: str
    handler_name: str
    attempt: int
    event_name: str
    received_at: float
    headers: Mapping[str, str] = field(default_factory=dict)
    log: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.LoggerAdapter(logging.getLogger("uphooks.handler"), {})
    )
    body: str = ""
    source: str = "webhook"


class _KeyedAdapter(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: object, kwargs: MutableMapping[str, Any]) -> tuple[object, Any]:
        extra = self.extra or {}
        return f"[{extra.get('key')} {extra.get('handler')}] {msg}", kwargs


def bound_logger(key: str, handler: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose lines carry the delivery key and handler, so one grep follows a delivery."""
    return _KeyedAdapter(logging.getLogger("uphooks.handler"), {"key": key, "handler": handler})
