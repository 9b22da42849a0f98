"""Typed models of Upload-Post's webhook events.

One model per documented event, chosen by the ``event`` field; any other event name becomes an
:class:`UnknownEvent` that keeps the whole payload. Every model keeps fields it does not declare
(``extra="allow"``), so a field the provider adds tomorrow reaches the handlers today.

Be liberal: ``user_email`` is a plain string because the provider's own example is not a valid
address, and only what the spec calls optional is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "ACCOUNT_EVENTS",
    "CATALOGUE",
    "DOCUMENTED_EVENTS",
    "EVENT_MODELS",
    "AccountEvent",
    "BaseEvent",
    "EventKind",
    "EventValidationError",
    "SocialAccountConnected",
    "SocialAccountDisconnected",
    "SocialAccountReauthRequired",
    "UnknownEvent",
    "UploadCompleted",
    "UploadResult",
    "parse_event",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class BaseEvent(_Open):
    event: str
    created_at: datetime | None = None

    #: The event name this model stands for ("*" for the catch-all model).
    name: ClassVar[str] = "*"


class UploadResult(_Open):
    success: bool
    url: str | None = None
    publish_id: str | None = None
    post_id: str | None = None
    error: str | None = None


class UploadCompleted(BaseEvent):
    name: ClassVar[str] = "upload_completed"
    job_id: str | None = None
    user_email: str
    profile_username: str | None = None
    platform: str
    media_type: str | None = None
    title: str | None = None
    caption: str | None = None
    result: UploadResult
    created_at: datetime


class AccountEvent(BaseEvent):
    user_email: str
    platform: str
    account_name: str
    status: str
    profile_username: str | None = None
    reason: str | None = None
    created_at: datetime


class SocialAccountConnected(AccountEvent):
    name: ClassVar[str] = "social_account_connected"


class SocialAccountDisconnected(AccountEvent):
    name: ClassVar[str] = "social_account_disconnected"


class SocialAccountReauthRequired(AccountEvent):
    name: ClassVar[str] = "social_account_reauth_required"


class UnknownEvent(BaseEvent):
    """An event name this release does not model (``dm_received``, ``comment_received``, ...)."""


#: The documented events, in the docs' order: the one list every other one is derived from.
_DOCUMENTED: tuple[type[BaseEvent], ...] = (
    UploadCompleted,
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountReauthRequired,
)


def _field_paths(model: type[BaseModel], prefix: str = "") -> frozenset[str]:
    """Every field a model declares, nested models' as dotted paths (``result.success``)."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        paths.add(prefix + name)
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            paths |= _field_paths(nested, f"{prefix}{name}.")
    return frozenset(paths)


@dataclass(frozen=True)
class EventKind:
    """What the catalogue knows of one documented event."""

    name: str
    model: type[BaseEvent]
    #: The fields its payload is documented to carry, nested ones dotted (``result.success``).
    fields: frozenset[str]

    @property
    def is_account_event(self) -> bool:
        """About a social account (platform + account name + status), not an upload."""
        return issubclass(self.model, AccountEvent)


#: Event name -> what it is. An event name not in it is a newer one: :class:`UnknownEvent`.
CATALOGUE: dict[str, EventKind] = {
    model.name: EventKind(model.name, model, _field_paths(model)) for model in _DOCUMENTED
}
EVENT_MODELS: dict[str, type[BaseEvent]] = {name: kind.model for name, kind in CATALOGUE.items()}
DOCUMENTED_EVENTS: tuple[str, ...] = tuple(CATALOGUE)
ACCOUNT_EVENTS: tuple[str, ...] = tuple(
    name for name, kind in CATALOGUE.items() if kind.is_account_event
)


class EventValidationError(ValueError):
    """A known event whose payload does not fit its documented model."""


def parse_event(payload: dict[str, Any]) -> BaseEvent:
    """Build the typed model for ``payload``; unknown event names give an :class:`UnknownEvent`.

    This is the discriminated union on ``event``, written as a lookup so that an unknown name
    falls back to the open model instead of failing.
    """
    model = EVENT_MODELS.get(str(payload.get("event")), UnknownEvent)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise EventValidationError(
            f"{payload.get('event')!r} payload does not match the documented fields: {exc}"
        ) from exc
