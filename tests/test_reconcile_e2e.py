"""End to end through real workers: the periodic job injects a delivery that never arrived and each
handler runs once; the late real webhook is a 200 duplicate and runs nothing; a failed upload
makes exactly one retry call. Handler *runs* are counted, and the test waits past the moment a
duplicate would have shown."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Stack, wait_for
from tests.fake_upload_post import KEY, FakeUploadPost, history_item
from uphooks.keys import Keys

QUIET = {"UPHOOKS_BUILTIN_LOG_HANDLER": "false"}
LATE = 6.0


@pytest.fixture
def api() -> Iterator[FakeUploadPost]:
    with FakeUploadPost() as fake:
        yield fake


def runs(stack: Stack) -> dict[str, list[str]]:
    r = stack.client()
    out = {}
    for name in r.scan_iter(f"{stack.prefix}:test:runs:*"):
        key = name.decode().split(":test:runs:", 1)[1]
        out[key] = [v.decode() for v in r.lrange(name, 0, -1)]
    return out


def test_the_job_injects_a_missed_result_once_and_the_late_webhook_is_a_duplicate(
    stack: Stack, api: FakeUploadPost
) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    api.history = [
        history_item(
            "instagram",
            success=True,
            at=at.isoformat(),
            request_id="req-e2e",
            post_id="17987654321098765",
        )
    ]
    env = {
        **QUIET,
        "UPHOOKS_RECONCILE_ENABLED": "true",
        "UPHOOKS_RECONCILE_INTERVAL_SECONDS": "60",
        "UPHOOKS_RECONCILE_GRACE_SECONDS": "600",
        "UPHOOKS_UPLOAD_POST_API_URL": api.url,
        "UPHOOKS_UPLOAD_POST_API_KEY": KEY,
    }
    ingress = stack.ingress()
    stack.worker("tests.plugins.reconciled", **env)
    stack.worker("tests.plugins.reconciled", **env)  # two workers, one pass per interval
    wait_for(lambda: len(runs(stack)) == 1, timeout=40, what="the injected delivery handled")
    time.sleep(LATE)
    [(key, ran)] = runs(stack).items()
    assert ran == ["reconciled"]  # one run, and the handler saw ctx.source
    assert api.lines() == ["GET /api/uploadposts/history?limit=100&page=1"]  # one pass in all
    assert api.requests[0].headers["authorization"] == f"Apikey {KEY}"

    listed = stack.cli("events", "ls")
    assert key in listed.stdout and "[reconciled]" in listed.stdout, listed.stdout

    # The sender's late delivery of the same result: its own delivery id, its own naming.
    webhook = {
        "event": "upload_completed",
        "job_id": "a1b2c3d4e5f6",
        "user_email": "owner@example.com",
        "profile_username": "your_profile_username",
        "platform": "instagram",
        "media_type": "video",
        "result": {
            "success": True,
            "url": "https://www.instagram.com/p/C1234567890/",
            "publish_id": "17987654321098765",
            "post_id": "17987654321098765",
            "error": None,
        },
        "created_at": (at + timedelta(seconds=3)).isoformat(),
    }
    answer = ingress.post(json.dumps(webhook), {"X-Upload-Post-Delivery": uuid.uuid4().hex})
    assert answer.status_code == 200, answer.text
    time.sleep(LATE)
    assert runs(stack) == {key: ["reconciled"]}
    assert len(api.requests) == 1
    for log in stack.tmp.glob("*.log"):
        assert KEY not in log.read_text(errors="replace")


def test_a_failed_upload_with_a_transient_error_makes_exactly_one_retry_call(
    stack: Stack, api: FakeUploadPost
) -> None:
    api.retryable["job-flaky"] = 2
    api.retryable["job-final"] = 1
    env = {
        **QUIET,
        "UPHOOKS_UPLOAD_POST_RETRY_ENABLED": "true",
        "UPHOOKS_UPLOAD_POST_API_URL": api.url,
        "UPHOOKS_UPLOAD_POST_API_KEY": KEY,
    }
    ingress = stack.ingress()
    stack.worker("tests.plugins.reconciled", **env)
    stack.worker("tests.plugins.reconciled", **env)
    now = datetime.now(UTC) - timedelta(minutes=5)

    def failed(job: str, platform: str, error: str) -> str:
        body = {
            "event": "upload_completed",
            "job_id": job,
            "user_email": "owner@example.com",
            "profile_username": "p",
            "platform": platform,
            "result": {"success": False, "error": error},
            "created_at": now.isoformat(),
        }
        # Each with its own delivery id: the sender fired the event twice, not a resend.
        answer = ingress.post(json.dumps(body), {"X-Upload-Post-Delivery": uuid.uuid4().hex})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["idempotency_key"])

    # Two platforms of one upload failed in one round, each fired twice; one permanent failure.
    keys = [
        failed("job-flaky", p, "Connection timed out while uploading")
        for p in ("x", "tiktok", "x", "tiktok")
    ]
    keys.append(failed("job-final", "youtube", "The video is too long for this account"))
    handled = Keys(stack.prefix)

    def settled() -> bool:
        r = stack.client()
        return all(r.hget(handled.handled(k), "uphooks.upload_post_retry") == b"done" for k in keys)

    wait_for(settled, timeout=40, what="the retry handler settled")
    time.sleep(LATE)
    posts = api.seen("POST", "/api/uploadposts/posts/retry")
    assert [p.body for p in posts] == [{"job_id": "job-flaky"}]
    assert posts[0].headers["idempotency-key"].endswith(":uphooks.upload_post_retry")
    assert posts[0].headers["authorization"] == f"Apikey {KEY}"
    for log in stack.tmp.glob("*.log"):
        assert KEY not in log.read_text(errors="replace")
