"""A stored delivery as the worker reads it: its record, payload and the typed event, once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from handlers.errors import PermanentError
from handlers.registry import HandlerSpec
from uphooks.events import BaseEvent, EventValidationError, parse_event


@dataclass
class Delivery:
    """A stored delivery, read once per message."""

    key: str
    raw: str
    record: dict[str, Any]
    payload: Any
    _event: BaseEvent | EventValidationError | None = field(default=None, repr=False)

    def event(self) -> BaseEvent:
        """The typed event, parsed once per delivery; a payload our models refuse is permanent."""
        if self._event is None:
            try:
                self._event = parse_event(self.payload)
            except EventValidationError as exc:
                self._event = exc
        if isinstance(self._event, EventValidationError):
            raise PermanentError(str(self._event)) from self._event
        return self._event

    @classmethod
    def parse(cls, key: str, raw: bytes) -> Delivery:
        record = orjson.loads(raw)
        return cls(key, raw.decode(errors="replace"), record, orjson.loads(record["body"]))

    @property
    def event_name(self) -> str:
        return str(self.record.get("event"))

    @property
    def received_at(self) -> float:
        return float(self.record.get("received_at") or 0.0)

    @property
    def created_at(self) -> float:
        """When the event happened (its ``created_at``, naive = UTC), else when it arrived."""
        raw = self.payload.get("created_at") if isinstance(self.payload, dict) else None
        try:
            at = datetime.fromisoformat(str(raw))
        except ValueError:
            return self.received_at
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()

    def ordering_key(self, spec: HandlerSpec) -> str | None:
        """The handler's ordering key for this event; a payload our models refuse has none
        (its pair is dead-lettered when it runs, and must not hold others)."""
        try:
            return spec.order_key(self.payload, self.event)
        except PermanentError:
            return None
