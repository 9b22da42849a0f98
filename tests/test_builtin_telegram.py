"""The built-in ``telegram`` handler against a fake Bot API server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from handlers import Context, PermanentError, TransientError
from handlers.telegram import HANDLER_NAME, TelegramSettings, format_message, router_for
from tests.builtins import run_handler
from tests.conftest import Stack, fixture_bodies, wait_for
from tests.plugins.servers import Answer, FakeServer
from uphooks.errors import ConfigurationError
from uphooks.events import parse_event

TOKEN = "123456:test-token"
BODIES = fixture_bodies()
OK = Answer(200, {"ok": True, "result": {"message_id": 1}})


def payload(name: str) -> dict[str, Any]:
    return dict(json.loads(BODIES[name]))


def ctx() -> Context:
    return Context("k:uphooks.telegram", "k", HANDLER_NAME, 1, "test", 0.0)


def settings(server: FakeServer | None = None, **overrides: Any) -> TelegramSettings:
    values: dict[str, Any] = {
        "bot_token": TOKEN,
        "chat_id": "-100200300",
        "api_url": server.url if server else "http://127.0.0.1:9",
        "timeout_seconds": 2,
    }
    return TelegramSettings(**(values | overrides))


def send(server: FakeServer, name: str, **overrides: Any) -> None:
    spec = router_for(settings(server, **overrides)).get(HANDLER_NAME)
    assert spec is not None
    run_handler(spec, parse_event(payload(name)), ctx())


def test_messages_are_readable_and_say_what_happened() -> None:
    texts = {name: format_message(parse_event(json.loads(body))) for name, body in BODIES.items()}
    assert texts["upload_completed.json"] == (
        "✅ Video published on instagram\n"
        "Title: My Awesome Video\n"
        "Profile: your_profile_username\n"
        "https://www.instagram.com/p/C1234567890/\n"
        "Job: a1b2c3d4e5f6...\n"
        "2024-03-15 14:30 UTC"
    )
    assert texts["upload_completed_failed.json"].startswith("❌ Video upload failed on tiktok\n")
    assert "Error: TikTok rejected the video" in texts["upload_completed_failed.json"]
    assert texts["social_account_reauth_required.json"] == (
        "⚠️ Account needs to be reconnected: UCxxxxxxxxx on youtube\n"
        "Reason: token refresh threshold exceeded\n"
        "Reconnect it in Upload-Post to keep posting.\n"
        "2024-03-15 14:30 UTC"
    )
    assert texts["social_account_disconnected.json"].startswith(
        "🔌 Account disconnected: my_tiktok_handle on tiktok\nProfile: your_profile_username\n"
    )
    unknown = format_message(parse_event({"event": "comment_received", "platform": "x"}))
    assert unknown == "\N{INFORMATION SOURCE}\ufe0f comment received\nPlatform: x"
    long = payload("upload_completed_failed.json")
    long["result"]["error"] = "x" * 5000
    assert len(format_message(parse_event(long))) == 4096


def test_send_message_posts_to_the_bot_api() -> None:
    with FakeServer(OK) as server:
        send(server, "upload_completed_failed.json")
    [seen] = server.requests
    assert seen.path == f"/bot{TOKEN}/sendMessage"
    sent = seen.json()
    assert sent["chat_id"] == "-100200300"
    assert sent["text"] == format_message(parse_event(payload("upload_completed_failed.json")))


def test_429_is_transient_with_telegrams_retry_after() -> None:
    too_many = Answer(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        },
    )
    with FakeServer(too_many) as server, pytest.raises(TransientError) as caught:
        send(server, "upload_completed.json")
    assert caught.value.retry_after == 7
    assert "Too Many Requests" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (Answer(502, b"bad gateway"), TransientError, "HTTP 502"),
        (
            Answer(400, {"ok": False, "description": "Bad Request: chat not found"}),
            PermanentError,
            "chat not found; check UPHOOKS_TELEGRAM_BOT_TOKEN",
        ),
        (
            Answer(401, {"ok": False, "description": "Unauthorized"}),
            PermanentError,
            "Unauthorized",
        ),
        (
            Answer(
                400,
                {
                    "ok": False,
                    "description": "Bad Request: group chat was upgraded to a supergroup chat",
                    "parameters": {"migrate_to_chat_id": -1001234},
                },
            ),
            PermanentError,
            "UPHOOKS_TELEGRAM_CHAT_ID=-1001234",
        ),
        (Answer(200, OK.body, delay=3), TransientError, "no answer within 2s"),
    ],
)
def test_errors_are_transient_or_permanent(
    answer: Answer, error: type[Exception], text: str
) -> None:
    with FakeServer(answer) as server, pytest.raises(error, match=text) as caught:
        send(server, "upload_completed.json")
    assert TOKEN not in str(caught.value)


def test_an_unreachable_api_is_transient_and_does_not_leak_the_token() -> None:
    with FakeServer() as server:
        url = server.url
    spec = router_for(settings(None, api_url=url)).get(HANDLER_NAME)
    assert spec is not None
    with pytest.raises(TransientError, match="ConnectError") as caught:
        run_handler(spec, parse_event(payload("upload_completed.json")), ctx())
    assert TOKEN not in str(caught.value)


def test_filters_come_from_settings() -> None:
    router = router_for(
        settings(
            None,
            events=["upload_completed"],
            platforms=["tiktok"],
            success=False,
        )
    )

    def wanted(name: str) -> bool:
        p = payload(name)
        return bool(router.handlers_for(p["event"], p))

    assert wanted("upload_completed_failed.json")  # a failed tiktok upload
    assert not wanted("upload_completed.json")  # succeeded, on instagram
    assert not wanted("social_account_disconnected.json")  # not an upload


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bot_token": None}, "UPHOOKS_TELEGRAM_BOT_TOKEN is not set"),
        ({"chat_id": ""}, "UPHOOKS_TELEGRAM_CHAT_ID is not set"),
        (
            {"events": ["social_account_connected"], "success": True},
            "can never match",
        ),
    ],
)
def test_incomplete_settings_stop_the_build(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        router_for(settings(None, **overrides))


def test_through_the_pipeline_a_429_is_waited_out(stack: Stack) -> None:
    too_many = Answer(429, {"ok": False, "parameters": {"retry_after": 1}})
    with FakeServer(OK) as server:
        server.answer(too_many)
        ingress = stack.ingress()
        stack.worker(
            "handlers.telegram",
            UPHOOKS_BUILTIN_LOG_HANDLER="false",
            UPHOOKS_TELEGRAM_BOT_TOKEN=TOKEN,
            UPHOOKS_TELEGRAM_CHAT_ID="42",
            UPHOOKS_TELEGRAM_API_URL=server.url,
            UPHOOKS_TELEGRAM_SUCCESS="false",
        )
        for name in ("upload_completed.json", "upload_completed_failed.json"):
            assert ingress.post(BODIES[name]).status_code == 202
        wait_for(lambda: len(server.requests) == 2, what="a 429, then the retry")
        first, second = server.requests
        assert second.at - first.at >= 1  # Telegram's retry_after, not our 0.2 s backoff
        assert first.json() == second.json()
        assert second.json()["chat_id"] == "42"
        time.sleep(0.5)
        assert len(server.requests) == 2  # the successful upload was filtered out
        assert second.json()["text"].startswith("❌ Video upload failed on tiktok")
