"""Built-in ``telegram`` handler: a readable message per event in a Telegram chat.

A filterable, retrying version of Upload-Post's own Telegram channel, through the Bot API's
``sendMessage``. An ordinary plugin with its own settings (:class:`TelegramSettings`,
``UPHOOKS_TELEGRAM_*``): ``_ENABLED``, ``_BOT_TOKEN``, ``_CHAT_ID``, and to narrow it down
``_EVENTS``, ``_PLATFORMS``, ``_SUCCESS``; ``_API_URL`` points at another Bot API server (a local
one, or a test's). A 429 from Telegram carries ``retry_after``: the next attempt waits at least
that long. A refused message (bad token, unknown chat, bot removed) is permanent.

The handler is ``async def`` (one ``httpx.AsyncClient`` per worker process, connections reused)
and rate-limited across all workers to what Telegram allows: ``_RATE`` per chat (1/s) and
``_BOT_RATE`` per bot (30/s); a message over the limit waits in Redis, not in a worker.

The Bot API has no idempotency key: a retry after a timeout whose request did arrive can show
the message twice. That is the one duplicate this handler cannot rule out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import httpx
from pydantic import Field, SecretStr

from handlers import _http
from handlers._settings import BuiltinSettings, CommaList, builtin_config
from handlers.context import Context
from handlers.errors import PermanentError, TransientError
from handlers.options import Options
from handlers.rates import parse_rate
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


class TelegramSettings(BuiltinSettings):
    """``UPHOOKS_TELEGRAM_*``. The bot token and API URL also serve notifications
    (workers/notify.py, ``UPHOOKS_NOTIFY_TELEGRAM_CHAT_ID``)."""

    model_config = builtin_config("UPHOOKS_TELEGRAM_")

    bot_token: SecretStr | None = None
    chat_id: str | None = None
    api_url: str = "https://api.telegram.org"
    events: CommaList = Field(default_factory=lambda: ["*"])
    platforms: CommaList = Field(default_factory=list)
    # true: only successful uploads; false: only failed ones (account events then never match).
    success: bool | None = None
    timeout_seconds: float = 10.0
    # Telegram's limits: about one message per second per chat, 30 per second per bot.
    rate: str = "1/s"
    bot_rate: str = "30/s"


@lru_cache(maxsize=1)
def telegram_settings() -> TelegramSettings:
    return TelegramSettings()


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


def _send(api_url: str, token: str, chat_id: str, text: str) -> tuple[str, dict[str, Any]]:
    url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
    return url, {"chat_id": chat_id, "text": text, "disable_web_page_preview": False}


def send_message(api_url: str, token: str, chat_id: str, text: str, timeout: float) -> None:
    """``sendMessage``; raises TransientError (with Telegram's retry_after) or PermanentError."""
    url, body = _send(api_url, token, chat_id, text)
    _check(_http.post(_WHAT, url, timeout, json=body))


async def send_message_async(
    api_url: str, token: str, chat_id: str, text: str, seconds: float
) -> None:
    """``send_message`` on the worker's event loop (``seconds``: the request's timeout)."""
    url, body = _send(api_url, token, chat_id, text)
    _check(await _http.apost(_WHAT, url, seconds, json=body))


_WHAT = "Telegram Bot API"


def _check(response: httpx.Response) -> None:
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


def enabled() -> bool:
    return telegram_settings().enabled


def build_router(settings: Settings) -> Router:
    """The plugin's entry: built from its own settings (the core ``settings`` are not used)."""
    return router_for(telegram_settings())


def router_for(settings: TelegramSettings) -> Router:
    token = settings.bot_token.get_secret_value() if settings.bot_token else ""
    chat_id = settings.chat_id
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
    if not httpx.URL(settings.api_url).scheme.startswith("http"):
        raise ConfigurationError("UPHOOKS_TELEGRAM_API_URL must be an http(s) URL")
    for name, value in (("RATE", settings.rate), ("BOT_RATE", settings.bot_rate)):
        try:
            parse_rate(value)
        except ConfigurationError as exc:
            raise ConfigurationError(f"UPHOOKS_TELEGRAM_{name}: {exc}") from exc
    filters: dict[str, Any] = {}
    if settings.platforms:
        filters["platform"] = settings.platforms
    if settings.success is not None:
        filters["success"] = settings.success
    api_url, timeout = settings.api_url, settings.timeout_seconds
    # The bot's id is the token's public part (before the colon): one bucket per bot, per chat.
    rate = {f"telegram:bot:{token.partition(':')[0]}": settings.bot_rate}
    rate[f"telegram:chat:{chat_id}"[:120]] = settings.rate
    router = Router()

    options = Options(queue=settings.queue, rate=rate)

    @router.on(*settings.events, name=HANDLER_NAME, **filters, options=options)
    async def telegram(event: BaseEvent, ctx: Context) -> None:
        await send_message_async(api_url, token, chat_id, format_message(event), timeout)
        ctx.log.info("sent to Telegram chat %s", chat_id)

    return router
