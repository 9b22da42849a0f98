"""`uphooks upload-post show|set|test` against a local fake of Upload-Post's API that this test
starts on 127.0.0.1: the exact requests sent, and errors as the user reads them."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import ROOT

API_PATH = "/api/uploadposts/users/notifications"
KEY = "upk_live_1234567890abcdef"
PUBLIC = "https://hooks.example.com"
ALL_ON = {
    "upload_completed": True,
    "social_account_connected": True,
    "social_account_disconnected": True,
    "social_account_reauth_required": True,
}


@dataclass
class FakeAPI:
    """Keeps settings like the provider: GET reads them, POST changes the fields given."""

    state: dict[str, Any] = field(
        default_factory=lambda: {
            "channels": {"webhook": True, "telegram": True},
            "webhook_url": PUBLIC + "/webhooks/upload-post",
            "telegram_chat_id": "42",
            "webhook_events": dict(ALL_ON),
            "webhook_secret_set": True,
        }
    )
    requests: list[dict[str, Any]] = field(default_factory=list)
    # method -> (status, JSON or text body, extra headers): answer that instead
    fail: dict[str, tuple[int, Any, dict[str, str]]] = field(default_factory=dict)
    url: str = ""

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple:
        self.requests.append(
            {
                "method": method,
                "path": path,
                "headers": headers,
                "json": json.loads(raw) if raw and path == API_PATH else None,
                "raw": raw,
            }
        )
        if path != API_PATH:  # the webhook URL the sample delivery goes to
            return 202, {"status": "accepted"}, {}
        if method in self.fail:
            return self.fail[method]
        if method == "POST":
            self.state.update(json.loads(raw))
        return 200, {"success": True, "notifications": self.state}, {}


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    fake = FakeAPI()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body, extra = fake.handle(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
            )
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            ctype = "text/html" if isinstance(body, str) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def run(api: FakeAPI | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("UPHOOKS_")}
    base.update(
        PYTHONPATH=str(ROOT),
        UPHOOKS_UPLOAD_POST_API_URL=api.url if api else "http://127.0.0.1:1",
        UPHOOKS_UPLOAD_POST_API_KEY=KEY,
        UPHOOKS_PUBLIC_URL=PUBLIC,
    )
    base.update(env)
    result = subprocess.run(
        [sys.executable, "-m", "uphooks_cli", "upload-post", *args],
        env=base,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert KEY not in result.stdout + result.stderr  # never echoed, whatever happened
    return result


def assert_authorized(request: dict[str, Any]) -> None:
    assert request["path"] == API_PATH
    assert request["headers"]["authorization"] == f"Apikey {KEY}"
    assert request["headers"]["accept"] == "application/json"


def test_show_reads_the_settings_with_the_api_key(api: FakeAPI) -> None:
    result = run(api, "show")
    assert result.returncode == 0, result.stderr
    (request,) = api.requests
    assert request["method"] == "GET" and request["raw"] == b""
    assert_authorized(request)
    assert "webhook:  on  https://hooks.example.com/webhooks/upload-post" in result.stdout
    assert "upload_completed on" in result.stdout
    assert "telegram: on  chat 42" in result.stdout
    assert "note:" not in result.stdout  # it points at this receiver

    as_json = run(api, "show", "--json")
    assert json.loads(as_json.stdout) == api.state


def test_set_url_points_upload_post_here_and_keeps_the_other_channel(api: FakeAPI) -> None:
    api.state |= {"webhook_url": None, "channels": {"webhook": False, "telegram": True}}
    result = run(api, "set", "--url")
    assert result.returncode == 0, result.stderr
    get, post = api.requests
    assert get["method"] == "GET"
    assert post["method"] == "POST"
    assert_authorized(post)
    assert post["headers"]["content-type"] == "application/json"
    assert post["json"] == {
        "webhook_url": "https://hooks.example.com/webhooks/upload-post",
        "channels": {"webhook": True, "telegram": True},
    }
    assert "Upload-Post now has:" in result.stdout
    assert "webhook:  on  https://hooks.example.com/webhooks/upload-post" in result.stdout
    # The secret exists at the provider but this receiver has none configured.
    assert "UPHOOKS_SECRETS" in result.stdout


def test_set_sends_only_what_changes(api: FakeAPI) -> None:
    events = run(api, "set", "--events", "upload_completed,dm_received")
    assert events.returncode == 0, events.stderr
    (post,) = api.requests  # no channel change: nothing to read first
    assert post["json"] == {
        "webhook_events": {
            "upload_completed": True,
            "social_account_connected": False,
            "social_account_disconnected": False,
            "social_account_reauth_required": False,
            "dm_received": True,
        }
    }
    api.requests.clear()
    telegram = run(api, "set", "--no-telegram", "--telegram-chat-id", "123")
    assert telegram.returncode == 0, telegram.stderr
    assert [r["method"] for r in api.requests] == ["GET", "POST"]
    assert api.requests[1]["json"] == {
        "channels": {"webhook": True, "telegram": False},
        "telegram_chat_id": "123",
    }
    api.requests.clear()
    every = run(api, "set", "--all-events", "--json")
    assert api.requests[0]["json"] == {"webhook_events": ALL_ON}
    assert json.loads(every.stdout)["webhook_events"] == ALL_ON


def test_set_dry_run_and_usage_errors_change_nothing(api: FakeAPI) -> None:
    dry = run(api, "set", "--url", "https://elsewhere.example/hook", "--dry-run")
    assert dry.returncode == 0
    assert json.loads(dry.stdout) == {
        "webhook_url": "https://elsewhere.example/hook",
        "channels": {"webhook": True, "telegram": True},
    }
    assert all(r["method"] == "GET" for r in api.requests)
    nothing = run(api, "set")
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    no_public = run(api, "set", "--url", UPHOOKS_PUBLIC_URL="")
    assert no_public.returncode == 2 and "UPHOOKS_PUBLIC_URL" in no_public.stderr
    assert all(r["method"] == "GET" for r in api.requests)


@pytest.mark.parametrize(
    ("method", "args", "answer", "expected"),
    [
        (
            "GET",
            ["show"],
            (401, {"message": f"Invalid API key {KEY}"}, {}),
            "refused the API key (HTTP 401: Invalid API key ***). Check "
            "UPHOOKS_UPLOAD_POST_API_KEY",
        ),
        (
            "GET",
            ["show"],
            (405, "<html>Method Not Allowed</html>", {}),
            "does not let this key read the settings with GET",
        ),
        (
            "POST",
            ["set", "--all-events"],
            (500, {"error": "internal"}, {}),
            "Upload-Post failed (HTTP 500: internal)",
        ),
        (
            "POST",
            ["set", "--all-events"],
            (429, {"message": "slow down"}, {"Retry-After": "30"}),
            "rate limiting this key (HTTP 429: slow down); try again in 30 s",
        ),
        (
            "POST",
            ["set", "--all-events"],
            (200, {"success": False, "message": "webhook_url must be public"}, {}),
            "did not apply it (success: false: webhook_url must be public)",
        ),
        (
            "POST",
            ["set", "--all-events"],
            (422, {"detail": [{"loc": "webhook_url", "msg": "invalid"}]}, {}),
            "refused the request (HTTP 422:",
        ),
    ],
)
def test_api_errors_read_as_what_happened_and_what_to_do(
    api: FakeAPI, method: str, args: list[str], answer: tuple, expected: str
) -> None:
    api.fail[method] = answer
    result = run(api, *args)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_no_key_and_no_api_are_explained() -> None:
    missing = run(None, "show", UPHOOKS_UPLOAD_POST_API_KEY="")
    assert missing.returncode == 1 and "no Upload-Post API key is set" in missing.stderr
    down = run(None, "show")
    assert down.returncode == 1
    assert "could not reach Upload-Post (GET http://127.0.0.1:1" in down.stderr


def test_test_checks_the_settings_and_can_post_a_signed_sample(api: FakeAPI) -> None:
    ok = run(api, "test")
    assert ok.returncode == 0, ok.stdout
    assert "API key: accepted" in ok.stdout
    assert "no documented endpoint" in ok.stdout
    assert ok.stdout.rstrip().endswith("ok")

    api.state |= {"channels": {"webhook": False, "telegram": False}, "webhook_url": None}
    bad = run(api, "test")
    assert bad.returncode == 1
    assert "problem: the webhook channel is off" in bad.stdout
    assert "problem: no webhook URL is set" in bad.stdout

    api.requests.clear()
    secret = "whsec_sample-secret-0123456789"
    api.state |= {"channels": {"webhook": True}, "webhook_url": api.url + "/hook"}
    sent = run(api, "test", "--send", UPHOOKS_SECRETS=secret, UPHOOKS_PUBLIC_URL="")
    assert sent.returncode == 0, sent.stdout
    get, sample = api.requests
    assert get["method"] == "GET" and sample["path"] == "/hook"
    assert "authorization" not in sample["headers"]  # the API key goes to the API only
    timestamp = sample["headers"]["x-upload-post-timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + sample["raw"], hashlib.sha256)
    assert sample["headers"]["x-upload-post-signature"] == "sha256=" + mac.hexdigest()
    assert json.loads(sample["raw"])["event"] == "upload_completed"
    assert f"sample delivery to {api.url}/hook: 202" in sent.stdout
    assert "warning: the webhook URL http://127.0.0.1" in sent.stdout  # not HTTPS
