"""`uphooks send`: documented bodies, the sender's headers and signature, checked by a capture
server of the test's own and by the real ingress on a real Redis."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import PATH, ROOT, Stack
from uphooks.events import (
    SocialAccountConnected,
    SocialAccountDisconnected,
    SocialAccountReauthRequired,
    UnknownEvent,
    UploadCompleted,
    parse_event,
)
from uphooks.keys import Keys
from uphooks_cli import simulate

SECRET = "whsec_test-secret-0123456789abcdef"

# Field names per event, from the provider's page (docs/provider-facts.md).
UPLOAD_FIELDS = {
    "event",
    "job_id",
    "user_email",
    "profile_username",
    "platform",
    "media_type",
    "title",
    "caption",
    "result",
    "created_at",
}
RESULT_FIELDS = {"success", "url", "publish_id", "post_id", "error"}
ACCOUNT_FIELDS = {
    "event",
    "user_email",
    "platform",
    "account_name",
    "status",
    "profile_username",
    "reason",
    "created_at",
}


@pytest.mark.parametrize(
    ("event", "model", "status"),
    [
        ("upload_completed", UploadCompleted, None),
        ("social_account_connected", SocialAccountConnected, "connected"),
        ("social_account_disconnected", SocialAccountDisconnected, "disconnected"),
        ("social_account_reauth_required", SocialAccountReauthRequired, "reauth_required"),
    ],
)
def test_bodies_have_the_documented_fields_and_parse_as_their_model(
    event: str, model: type, status: str | None
) -> None:
    rng = random.Random(1)
    for platform in simulate.PLATFORMS:
        body = simulate.build_event(event, platform, rng=rng)
        assert isinstance(parse_event(body), model)
        assert body["platform"] == platform
        if status is None:
            assert set(body) == UPLOAD_FIELDS and set(body["result"]) == RESULT_FIELDS
            assert body["result"]["success"] is True and body["result"]["url"].startswith("https")
        else:
            assert set(body) <= ACCOUNT_FIELDS and body["status"] == status
            assert ("reason" in body) == (event != "social_account_connected")
    failed = simulate.build_event("upload_completed", "tiktok", rng=rng, failed=True, job_id=False)
    assert "job_id" not in failed
    assert failed["result"]["success"] is False and failed["result"]["error"]
    assert failed["result"]["url"] is None and failed["result"]["post_id"] is None
    # The docs' created_at form: microseconds, no zone.
    assert time.strptime(failed["created_at"], "%Y-%m-%dT%H:%M:%S.%f")
    assert isinstance(parse_event(simulate.build_event("dm_received", "x", rng=rng)), UnknownEvent)


class Capture:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                capture.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "accepted"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"


@pytest.fixture
def capture() -> Iterator[Capture]:
    c = Capture()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield c
    finally:
        c.server.shutdown()
        c.server.server_close()


def cli(stack: Stack | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = stack.env(**env) if stack else dict(os.environ, PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "uphooks_cli", "send", *args],
        env=base,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_delivery_carries_the_senders_headers_and_a_signature_that_checks(
    capture: Capture,
) -> None:
    before = int(time.time())
    result = cli(
        None,
        "social_account_disconnected",
        "--platform",
        "tiktok",
        "--sign-with",
        SECRET,
        "--url",
        capture.url,
    )
    assert result.returncode == 0, result.stderr
    assert "status codes: 202: 1" in result.stdout
    (request,) = capture.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    raw: bytes = request["body"]
    assert request["path"] == PATH
    assert headers["user-agent"] == "Upload-Post-Webhooks/1.0"
    assert headers["content-type"] == "application/json"
    assert headers["x-upload-post-event"] == "social_account_disconnected"
    uuid.UUID(headers["x-upload-post-delivery"])
    timestamp = headers["x-upload-post-timestamp"]
    assert before <= int(timestamp) <= time.time()
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    assert headers["x-upload-post-signature"] == "sha256=" + expected.hexdigest()
    body = json.loads(raw)
    assert body["event"] == "social_account_disconnected" and body["platform"] == "tiktok"
    assert body["reason"] in ("manual_disconnect", "account_blocked", "max_auth_strikes")


def test_platforms_rotate_repeats_keep_the_delivery_id_and_unsigned_sends_no_signature(
    capture: Capture,
) -> None:
    result = cli(
        None,
        "upload_completed",
        "--count",
        "4",
        "--repeat",
        "2",
        "--platform",
        "youtube",
        "--platform",
        "x",
        "--unsigned",
        "--url",
        capture.url,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sent"] == 8 and summary["statuses"] == {"202": 8}
    assert summary["signed"] is False
    requests = capture.requests
    assert all("X-Upload-Post-Signature" not in r["headers"] for r in requests)
    ids = [r["headers"]["X-Upload-Post-Delivery"] for r in requests]
    assert len(set(ids)) == 4 and all(ids.count(i) == 2 for i in ids)
    by_id: dict[str, set[bytes]] = {}
    for r in requests:
        by_id.setdefault(r["headers"]["X-Upload-Post-Delivery"], set()).add(r["body"])
    assert all(len(b) == 1 for b in by_id.values())  # a resend is the same bytes
    platforms = sorted(json.loads(next(iter(b)))["platform"] for b in by_id.values())
    assert platforms == ["x", "x", "youtube", "youtube"]


def test_the_real_ingress_accepts_signed_deliveries_and_refuses_a_wrong_secret(
    stack: Stack,
) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="upload-post", UPHOOKS_SECRETS=SECRET)
    url = ingress.url + PATH
    client, keys = stack.client(), Keys(stack.prefix)

    ok = cli(
        stack, "upload_completed", "--count", "5", "--url", url, "--json", UPHOOKS_SECRETS=SECRET
    )  # signed with the first of UPHOOKS_SECRETS by default
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["statuses"] == {"202": 5}
    members = client.zrange(keys.events_index, 0, -1)
    assert len(members) == 5
    record = json.loads(client.get(keys.delivery(members[0].decode())) or b"{}")
    assert record["event"] == "upload_completed"
    assert len(record["headers"]["x-upload-post-delivery"]) == 36  # the sender's id, a UUID
    assert record["headers"]["x-upload-post-signature"].startswith("sha256=")
    # The same on every delivery and held for the whole de-duplication window: not kept.
    assert not {"user-agent", "content-type"} & set(record["headers"])

    resent = cli(
        stack,
        "social_account_connected",
        "--count",
        "2",
        "--repeat",
        "2",
        "--url",
        url,
        "--json",
        "--sign-with",
        SECRET,
    )
    assert json.loads(resent.stdout)["statuses"] == {"200": 2, "202": 2}

    wrong = cli(
        stack,
        "upload_completed",
        "--count",
        "3",
        "--url",
        url,
        "--sign-with",
        "whsec_not-the-right-one-000000",
    )
    assert wrong.returncode == 1
    assert "status codes: 503: 3" in wrong.stdout  # a secret we may learn later: retried

    stale = cli(
        stack, "upload_completed", "--url", url, "--sign-with", SECRET, "--age", str(2 * 86400)
    )
    assert stale.returncode == 1 and "status codes: 401: 1" in stale.stdout
    assert len(client.zrange(keys.events_index, 0, -1)) == 7


def test_unreachable_receivers_are_counted_not_raised() -> None:
    result = cli(
        None, "upload_completed", "--count", "2", "--url", "http://127.0.0.1:1/x", "--unsigned"
    )
    assert result.returncode == 1
    assert "status codes: none; errors: ConnectError: 2" in result.stdout


def test_dry_run_prints_the_request_and_sends_nothing(capture: Capture) -> None:
    result = cli(
        None,
        "upload_completed",
        "--dry-run",
        "--sign-with",
        SECRET,
        "--url",
        capture.url,
        "--seed",
        "3",
    )
    assert result.returncode == 0
    assert f"POST {capture.url}" in result.stdout
    assert "X-Upload-Post-Signature: sha256=" in result.stdout
    assert capture.requests == []
