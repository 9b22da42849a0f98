"""Built-in ``telegram`` handler: a readable message per event in a Telegram chat.

A filterable, retrying version of Upload-Post's own Telegram channel, through the Bot API's
``sendMessage``. Settings: ``UPHOOKS_TELEGRAM_ENABLED``, ``_BOT_TOKEN``, ``_CHAT_ID``, and to narrow
it down ``_EVENTS``, ``_PLATFORMS``, ``_SUCCESS``; ``_API_URL`` points at another Bot API server
(a local one, or a test's). A 429 from Telegram carries ``retry_after``: the next attempt waits at
least that long. A refused message (bad token, unknown chat, bot removed) is permanent.

The Bot API has no idempotency key: a retry after a timeout whose request did arrive can show
the message twice. That is the one duplicate this handler cannot rule out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from handlers import _http
from handlers.context import Context
from handlers.errors import PermanentError, TransientError
from handlers.options import Options
from handlers.registry import Router
from uphooks.errors import ConfigurationError
from uphooks.events import AccountEvent, BaseEvent, UploadCompleted
from uphooks.settings import Settings

HANDLER_NAME = "uphooks.telegram"
MAX_MESSAGE = 4096  # characters, the Bot API's limit

_INFO = "\N{INFORMATION SOURCE}\ufe0f"
_ACCOUNT_HEADS = {
    "social_account_connected": "🔗 Account connected",
    "social_account_disconnected": "🔌 Account disconnected",
    "social_account_reauth_required": "⚠️ Account needs to be reconnected",
}


def _when(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _words(value: str) -> str:
    return value.replace("_", " ")


def format_message(event: BaseEvent) -> str:
    """The text for one event: what happened first, then the details that tell which one."""
    lines: list[str | None]
    if isinstance(event, UploadCompleted):
        result = event.result
        what = (event.media_type or "").capitalize()
        if result.success:
            head = f"✅ {what + ' published' if what else 'Published'} on {event.platform}"
        else:
            head = f"❌ {what + ' upload' if what else 'Upload'} failed on {event.platform}"
        lines = [
            head,
            f"Title: {event.title}" if event.title else None,
            f"Profile: {event.profile_username}" if event.profile_username else None,
            result.url if result.success and result.url else None,
            f"Error: {result.error}" if not result.success and result.error else None,
            f"Job: {event.job_id}" if event.job_id else None,
        ]
    elif isinstance(event, AccountEvent):
        head = _ACCOUNT_HEADS.get(event.event, f"{_INFO} Account {_words(event.status)}")
        lines = [
            f"{head}: {event.account_name} on {event.platform}",
            f"Profile: {event.profile_username}" if event.profile_username else None,
            f"Reason: {_words(event.reason)}" if event.reason else None,
            "Reconnect it in Upload-Post to keep posting."
            if event.event == "social_account_reauth_required"
            else None,
        ]
    else:
        extra: dict[str, Any] = event.model_extra or {}
        lines = [
            f"{_INFO} {_words(event.event)}",
            f"Platform: {extra['platform']}" if isinstance(extra.get("platform"), str) else None,
            f"Profile: {extra['profile_username']}"
            if isinstance(extra.get("profile_username"), str)
            else None,
        ]
    lines.append(_when(event.created_at))
    text = "\n".join(line for line in lines if line)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def send_message(api_url: str, token: str, chat_id: str, text: str, timeout: float) -> None:
    """``sendMessage``; raises TransientError (with Telegram's retry_after) or PermanentError."""
    response = _http.post(
        "Telegram Bot API",
        f"{api_url.rstrip('/')}/bot{token}/sendMessage",
        timeout,
        json={"chat_id": chat_id, "text": text, "disable_web_page_preview": False},
    )
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code == 200 and answer.get("ok") is True:
        return
    description = answer.get("description") or response.text[:200]
    detail = f"Telegram Bot API: HTTP {response.status_code} {description}"
    parameters = answer.get("parameters") if isinstance(answer.get("parameters"), dict) else {}
    if response.status_code == 429:
        wait = parameters.get("retry_after") if parameters else None
        after = float(wait) if isinstance(wait, int | float) else _http.retry_after(response)
        raise TransientError(detail, retry_after=after)
    if _http.is_transient(response.status_code):
        raise TransientError(detail, retry_after=_http.retry_after(response))
    hint = "check UPHOOKS_TELEGRAM_BOT_TOKEN and UPHOOKS_TELEGRAM_CHAT_ID"
    if parameters and parameters.get("migrate_to_chat_id"):
        new_id = parameters["migrate_to_chat_id"]
        hint = f"the group became a supergroup: set UPHOOKS_TELEGRAM_CHAT_ID={new_id}"
    raise PermanentError(f"{detail}; {hint}")


def build_router(settings: Settings) -> Router:
    token = settings.telegram_bot_token.get_secret_value() if settings.telegram_bot_token else ""
    chat_id = settings.telegram_chat_id
    if not token:
        raise ConfigurationError(
            "UPHOOKS_TELEGRAM_BOT_TOKEN is not set: the telegram handler needs the token "
            "@BotFather gave your bot"
        )
    if not chat_id:
        raise ConfigurationError(
            "UPHOOKS_TELEGRAM_CHAT_ID is not set: the telegram handler needs the chat to post "
            "to (a numeric id, or @channelname)"
        )
    if not httpx.URL(settings.telegram_api_url).scheme.startswith("http"):
        raise ConfigurationError("UPHOOKS_TELEGRAM_API_URL must be an http(s) URL")
    filters: dict[str, Any] = {}
    if settings.telegram_platforms:
        filters["platform"] = settings.telegram_platforms
    if settings.telegram_success is not None:
        filters["success"] = settings.telegram_success
    api_url, timeout = settings.telegram_api_url, settings.telegram_timeout_seconds
    router = Router()

    @router.on(
        *settings.telegram_events,
        name=HANDLER_NAME,
        **filters,
        options=Options(queue=settings.telegram_queue),
    )
    def telegram(event: BaseEvent, ctx: Context) -> None:
        send_message(api_url, token, chat_id, format_message(event), timeout)
        ctx.log.info("sent to Telegram chat %s", chat_id)

    return router
