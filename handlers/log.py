"""Built-in ``log`` handler: one structured line per event, personal data masked by default."""

from __future__ import annotations

import json
import logging
from typing import Any

from handlers.context import Context
from handlers.registry import Router
from uphooks.events import BaseEvent
from uphooks.settings import get_settings

router = Router()
log = logging.getLogger("uphooks.events")

_PERSONAL = ("user_email",)


def mask_email(value: str) -> str:
    local, at, domain = value.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


@router.on("*", name="uphooks.log")
def log_event(event: BaseEvent, ctx: Context) -> None:
    fields: dict[str, Any] = {
        "event": ctx.event_name,
        "key": ctx.delivery_key,
        "platform": getattr(event, "platform", None),
        "profile": getattr(event, "profile_username", None),
    }
    for name in ("account_name", "status", "reason", "job_id"):
        value = getattr(event, name, None)
        if value is not None:
            fields[name] = value
    result = getattr(event, "result", None)
    if result is not None:
        fields["success"] = result.success
        fields["url"] = result.url
        fields["error"] = result.error
    email = getattr(event, "user_email", None)
    if isinstance(email, str):
        fields["user_email"] = email if get_settings().log_personal_data else mask_email(email)
    log.info(
        "event %s",
        json.dumps(fields, default=str, sort_keys=True),
        extra={"delivery_key": ctx.delivery_key, "handler": ctx.handler_name},
    )
