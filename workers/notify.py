"""Tell a human: one message when handlers dead-letter, or when due work gets old.

Configured by ``UPHOOKS_NOTIFY_TELEGRAM_CHAT_ID`` (a Telegram message through the built-in
telegram handler's ``send_message``, with ``UPHOOKS_TELEGRAM_BOT_TOKEN``) and/or
``UPHOOKS_NOTIFY_WEBHOOK_URL`` (a JSON POST, signed like the built-in forward handler's when
``UPHOOKS_FORWARD_SECRET`` is set). Off when neither is set.

Every worker's main process checks every ``UPHOOKS_NOTIFY_CHECK_SECONDS``; Redis decides who
sends, so a fleet sends one message, not one per worker:

- **dead letters**: entries in the dead-letter index newer than the cursor ``notify:dlq-cursor``
  make one message naming how many, for which handlers, and the latest error;
- **overdue**: the oldest overdue item in the ledger's schedule (the metric
  ``uphooks_ledger_oldest_overdue_seconds``) passing ``UPHOOKS_NOTIFY_OVERDUE_SECONDS`` makes one
  message when it crosses the threshold, not on every check while it stays above.

Rate limit: at most one message per kind per ``UPHOOKS_NOTIFY_MIN_INTERVAL_SECONDS`` (a
``SET NX EX`` gate in Redis); dead letters arriving meanwhile are summed up in the next one. A
message that could not be sent opens the gate again and is tried at the next check.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from handlers import _http
from handlers.forward import ForwardSettings, decode_secret, forward_settings
from handlers.telegram import TelegramSettings, send_message, telegram_settings
from uphooks import signatures
from uphooks.backlog import ledger_backlog
from uphooks.errors import ConfigurationError
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.background import Periodic, while_worker_runs
from workers.deadletter import DeadLetter

log = logging.getLogger("uphooks.notify")

#: Dead letters named one by one in a message at most (the rest are counted).
LISTED = 5


@dataclass(frozen=True)
class Notice:
    kind: str  # dead_letters | overdue
    text: str
    details: dict[str, Any]


class Notifier:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        telegram: TelegramSettings | None = None,
        forward: ForwardSettings | None = None,
    ) -> None:
        self._telegram = telegram or telegram_settings()
        self._forward = forward or forward_settings()
        if settings.notify_telegram_chat_id and self._telegram.bot_token is None:
            raise ConfigurationError(
                "UPHOOKS_NOTIFY_TELEGRAM_CHAT_ID is set but UPHOOKS_TELEGRAM_BOT_TOKEN is not: "
                "set the bot token, or unset the chat id"
            )
        self._r = client
        self._s = settings
        self._keys = Keys(settings.key_prefix)

    def _key(self, name: str) -> str:
        return f"{self._keys.prefix}:notify:{name}"

    def check(self, now: float | None = None) -> list[Notice]:
        """Look once; send what is due. Returns the notices sent."""
        now = time.time() if now is None else now
        sent = []
        for notice in (self._dead_letters(), self._overdue(now)):
            if notice is not None and self._gated_send(notice):
                sent.append(notice)
        return sent

    # -- what to say ---------------------------------------------------------------------
    def _dead_letters(self) -> Notice | None:
        cursor = float(self._r.get(self._key("dlq-cursor")) or 0)
        rows: list[tuple[bytes, float]] = self._r.zrangebyscore(  # type: ignore[assignment]
            self._keys.dlq_index, f"({cursor}", "+inf", withscores=True
        )
        if not rows:
            return None
        handlers = Counter(m.decode().rpartition("|")[2] for m, _ in rows)
        latest: DeadLetter | None = None
        raw = self._r.get(self._keys.dlq_entry(rows[-1][0].decode()))
        if raw:
            latest = DeadLetter(**orjson.loads(raw))
        named = ", ".join(f"{h} ({n})" for h, n in handlers.most_common(LISTED))
        more = len(handlers) - LISTED
        text = (
            f"uphooks: {len(rows)} new dead letter(s) for {named}"
            + (f" and {more} more handler(s)" if more > 0 else "")
            + (f". Latest: {latest.event} {latest.key}: {latest.error[:300]}" if latest else "")
            + ". See `uphooks dlq ls`; fix the cause, then `uphooks dlq replay`."
        )
        details = {"count": len(rows), "handlers": dict(handlers), "until": rows[-1][1]}
        return Notice("dead_letters", text, details)

    def _overdue(self, now: float) -> Notice | None:
        age = ledger_backlog(self._r, self._keys, now).oldest_overdue_seconds
        threshold = self._s.notify_overdue_seconds
        if age <= threshold:
            self._r.delete(self._key("overdue-over"))  # back below: the next crossing tells
            return None
        if self._r.exists(self._key("overdue-over")):
            return None  # told already for this crossing
        text = (
            f"uphooks: the oldest overdue delivery has waited {age:.0f}s "
            f"(UPHOOKS_NOTIFY_OVERDUE_SECONDS={threshold:g}). Are workers alive and consuming "
            "every queue? See `uphooks status`."
        )
        return Notice("overdue", text, {"oldest_overdue_seconds": age, "threshold": threshold})

    # -- sending, at most once per kind per interval ------------------------------------------
    def _gated_send(self, notice: Notice) -> bool:
        gate = self._key(f"gate:{notice.kind}")
        interval_ms = max(1, int(self._s.notify_min_interval_seconds * 1000))
        if not self._r.set(gate, 1, nx=True, px=interval_ms):
            return False
        try:
            self.send(notice)
        except Exception as exc:
            self._r.delete(gate)
            log.warning("notification not sent (will try again): %s", exc)
            return False
        if notice.kind == "dead_letters":
            self._r.set(self._key("dlq-cursor"), repr(notice.details["until"]))
        else:
            self._r.set(self._key("overdue-over"), 1)
        log.info("notification sent: %s", notice.text)
        return True

    def send(self, notice: Notice) -> None:
        """Send through every configured channel; raises when one failed."""
        s, tg, fw = self._s, self._telegram, self._forward
        if s.notify_telegram_chat_id and tg.bot_token is not None:
            token = tg.bot_token.get_secret_value()
            chat = s.notify_telegram_chat_id
            send_message(tg.api_url, token, chat, notice.text, tg.timeout_seconds)
        if s.notify_webhook_url:
            body = orjson.dumps(
                {"type": f"uphooks.{notice.kind}", "text": notice.text, **notice.details}
            )
            headers = {"content-type": "application/json", "user-agent": "uphooks-notify/1"}
            if fw.secret is not None:
                msg_id, stamp = f"notify-{notice.kind}-{time.time_ns()}", int(time.time())
                key = decode_secret(fw.secret.get_secret_value())
                headers |= signatures.standard_webhooks_headers(key, msg_id, body, stamp)
            what = "notification webhook"
            response = _http.post(
                what, s.notify_webhook_url, fw.timeout_seconds, content=body, headers=headers
            )
            _http.check(what, response)


def configured(settings: Settings) -> bool:
    return bool(settings.notify_telegram_chat_id or settings.notify_webhook_url)


def install(settings: Settings) -> None:
    """Check from the worker's main process once it is ready, when notifications are configured.

    Call once where the Celery app's signals are wired (``workers/tasks.py``)."""
    if not configured(settings):
        return
    from uphooks.redis import sync_client

    Notifier(sync_client(settings), settings)  # a configuration that cannot work stops the start

    def start() -> Periodic:
        notifier = Notifier(sync_client(settings), settings)
        interval = settings.notify_check_seconds
        return Periodic(
            "uphooks-notify", interval, notifier.check, log=log, what="notification check"
        ).start()

    while_worker_runs(start)
