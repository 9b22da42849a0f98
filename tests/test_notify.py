"""workers/notify.py: one message per dead-letter burst or overdue crossing, rate-limited, sent to
real HTTP servers on 127.0.0.1 standing in for Telegram's Bot API and a webhook receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from handlers.forward import ForwardSettings
from handlers.telegram import TelegramSettings
from tests.conftest import Stack, fixture_bodies, wait_for
from tests.plugins.servers import Answer, FakeServer, Seen
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.deadletter import DeadLetter, DeadLetters
from workers.notify import Notifier

OK = Answer(200, {"ok": True, "result": {"message_id": 1}})
SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
INTERVAL = 1.0


def settings(stack: Stack, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": stack.redis_url,
        "key_prefix": stack.prefix,
        "notify_min_interval_seconds": INTERVAL,
        "notify_overdue_seconds": 60,
    }
    return Settings(**(values | overrides))


def dead(stack: Stack, key: str, handler: str = "crm.sync") -> None:
    now = time.time()
    dl = DeadLetter(key, handler, "upload_completed", 3, "HTTP 500 from crm", "", now, now, "{}")
    DeadLetters(stack.client(), Keys(stack.prefix), 3600).add(dl)


def signed(seen: Seen) -> bool:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    msg = f"{seen.headers['webhook-id']}.{seen.headers['webhook-timestamp']}.".encode()
    digest = base64.b64encode(hmac.new(key, msg + seen.body, hashlib.sha256).digest()).decode()
    return seen.headers["webhook-signature"] == f"v1,{digest}"


def test_dead_letters_make_one_message_per_interval_summing_up_the_ones_in_between(
    stack: Stack,
) -> None:
    with FakeServer(OK) as telegram, FakeServer() as hook:
        notifier = Notifier(
            stack.client(),
            settings(
                stack,
                notify_telegram_chat_id="-100",
                notify_webhook_url=hook.url + "/alerts",
            ),
            # The plugins' own settings (UPHOOKS_TELEGRAM_*, UPHOOKS_FORWARD_*).
            TelegramSettings(bot_token="123:abc", api_url=telegram.url),
            ForwardSettings(secret=SECRET),
        )
        assert notifier.check() == []
        dead(stack, "e:1")
        [first] = notifier.check()
        assert first.details["count"] == 1
        dead(stack, "e:2")
        dead(stack, "e:3", handler="mail.send")
        assert notifier.check() == []  # within the interval: held back, not lost
        time.sleep(INTERVAL + 0.1)
        [second] = notifier.check()
        assert second.details["handlers"] == {"crm.sync": 1, "mail.send": 1}
        assert notifier.check() == []  # nothing new

    texts = [seen.json()["text"] for seen in telegram.requests]
    assert len(texts) == 2 and {seen.path for seen in telegram.requests} == {
        "/bot123:abc/sendMessage"
    }
    assert "1 new dead letter(s) for crm.sync (1)" in texts[0]
    assert "HTTP 500 from crm" in texts[0]
    assert "2 new dead letter(s)" in texts[1]
    assert [seen.json()["type"] for seen in hook.requests] == ["uphooks.dead_letters"] * 2
    assert all(signed(seen) for seen in hook.requests)


def test_overdue_work_tells_once_per_crossing_and_a_failed_send_is_tried_again(
    stack: Stack,
) -> None:
    r = stack.client()
    due = Keys(stack.prefix).due
    with FakeServer() as hook:
        hook.answer(Answer(503))
        notifier = Notifier(r, settings(stack, notify_webhook_url=hook.url))
        r.zadd(due, {"e:old|crm.sync": time.time() - 120})
        assert notifier.check() == []  # the receiver answered 503: not sent
        [told] = notifier.check()
        assert told.kind == "overdue" and told.details["oldest_overdue_seconds"] >= 120
        time.sleep(INTERVAL + 0.1)
        assert notifier.check() == []  # still over the threshold: told already
        r.zadd(due, {"e:old|crm.sync": time.time()})
        assert notifier.check() == []  # back below
        r.zadd(due, {"e:old|crm.sync": time.time() - 300})
        [again] = notifier.check()
        assert again.kind == "overdue"
    assert [seen.json()["type"] for seen in hook.requests] == ["uphooks.overdue"] * 3
    assert "waited 1" in hook.requests[1].json()["text"]


def test_a_worker_tells_telegram_when_its_handler_dead_letters(stack: Stack) -> None:
    with FakeServer(OK) as telegram:
        stack.worker(
            "tests.plugins.ledgered",
            UPHOOKS_BUILTIN_LOG_HANDLER="false",
            UPHOOKS_TELEGRAM_BOT_TOKEN="123:abc",
            UPHOOKS_TELEGRAM_API_URL=telegram.url,
            UPHOOKS_NOTIFY_TELEGRAM_CHAT_ID="-100",
            UPHOOKS_NOTIFY_CHECK_SECONDS="0.3",
        )
        ingress = stack.ingress()
        assert ingress.post(fixture_bodies()["upload_completed.json"]).status_code == 202
        wait_for(lambda: telegram.requests, timeout=30, what="a Telegram message")
        time.sleep(1.5)  # a few more checks: still one message
    [seen] = telegram.requests
    assert seen.json()["chat_id"] == "-100"
    assert "1 new dead letter(s) for ledger.broken (1)" in seen.json()["text"]
