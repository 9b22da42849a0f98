"""The built-in ``upload_post_retry`` handler through the real pipeline (ingress, Redis, a Celery
worker) against the fake Upload-Post API: 409 and 404 are final, a 429 waits for its
Retry-After, and the per-upload maximum kept in Redis is honoured. The exact retry requests the
fake received are asserted."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.conftest import Ingress, Stack, wait_for
from tests.fake_upload_post import KEY, FakeUploadPost, Reply
from uphooks.keys import Keys

RETRY = "/api/uploadposts/posts/retry"
HANDLER = "uphooks.upload_post_retry"
#: Long enough after a handler settles for a further call (a worker retry) to have shown.
LATE = 3.0


@pytest.fixture
def api() -> Iterator[FakeUploadPost]:
    with FakeUploadPost() as fake:
        yield fake


@pytest.fixture
def ingress(stack: Stack, api: FakeUploadPost) -> Ingress:
    env = {
        "UPHOOKS_BUILTIN_LOG_HANDLER": "false",
        "UPHOOKS_UPLOAD_POST_RETRY_ENABLED": "true",
        "UPHOOKS_UPLOAD_POST_RETRY_MAX": "2",
        "UPHOOKS_UPLOAD_POST_API_URL": api.url,
        "UPHOOKS_UPLOAD_POST_API_KEY": KEY,
    }
    ingress = stack.ingress()
    stack.worker("tests.plugins.reconciled", **env)
    return ingress


def fail(ingress: Ingress, job: str, platform: str = "x") -> str:
    """A failed upload with a transient error; its delivery key."""
    body = {
        "event": "upload_completed",
        "job_id": job,
        "user_email": "owner@example.com",
        "profile_username": "p",
        "platform": platform,
        "result": {"success": False, "error": "Connection timed out while uploading"},
        "created_at": datetime.now(UTC).isoformat(),
    }
    answer = ingress.post(json.dumps(body), {"X-Upload-Post-Delivery": uuid.uuid4().hex})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["idempotency_key"])


def state(stack: Stack, key: str) -> bytes | None:
    value = stack.client().hget(Keys(stack.prefix).handled(key), HANDLER)
    return value if isinstance(value, bytes) else None


def settle(stack: Stack, key: str) -> bytes | None:
    wait_for(lambda: state(stack, key) in (b"done", b"dead"), timeout=30, what=f"{key} settled")
    time.sleep(LATE)
    return state(stack, key)


def test_409_and_404_are_final_one_call_each_and_the_pair_ends_done(
    stack: Stack, api: FakeUploadPost, ingress: Ingress
) -> None:
    api.retryable["job-nothing-left"] = 0  # 409: no failed platform left
    nothing_left = fail(ingress, "job-nothing-left")
    unknown = fail(ingress, "job-unknown")  # 404: the fake does not know it

    assert settle(stack, nothing_left) == b"done"
    assert settle(stack, unknown) == b"done"
    posts = api.seen("POST", RETRY)
    assert sorted(json.dumps(p.body) for p in posts) == [
        '{"job_id": "job-nothing-left"}',
        '{"job_id": "job-unknown"}',
    ]
    assert {p.headers["idempotency-key"] for p in posts} == {
        f"{nothing_left}:{HANDLER}",
        f"{unknown}:{HANDLER}",
    }
    # Nothing was counted against the uploads' maximum.
    r = stack.client()
    assert r.hget(f"{stack.prefix}:upload-retry:job_id:job-nothing-left", "calls") is None
    assert r.hget(f"{stack.prefix}:upload-retry:job_id:job-unknown", "calls") is None


def test_a_429_is_retried_no_sooner_than_its_retry_after(
    stack: Stack, api: FakeUploadPost, ingress: Ingress
) -> None:
    api.retryable["job-busy"] = 1
    api.script[RETRY].append(
        Reply(429, {"error": "Too many requests"}, headers={"Retry-After": "3"})
    )
    key = fail(ingress, "job-busy")

    assert settle(stack, key) == b"done"
    posts = api.seen("POST", RETRY)
    assert [p.body for p in posts] == [{"job_id": "job-busy"}] * 2
    assert posts[1].at - posts[0].at >= 3.0, posts[1].at - posts[0].at
    assert [p.headers["idempotency-key"] for p in posts] == [f"{key}:{HANDLER}"] * 2
    calls = stack.client().hget(f"{stack.prefix}:upload-retry:job_id:job-busy", "calls")
    assert calls == b"1"


def test_a_third_failure_of_one_upload_beyond_the_maximum_makes_no_call(
    stack: Stack, api: FakeUploadPost, ingress: Ingress
) -> None:
    keys = []
    for round_ in range(3):
        api.retryable["job-stubborn"] = 1  # the last retry failed again: something to retry
        time.sleep(0.05)  # this round's failure happens after the last call
        keys.append(fail(ingress, "job-stubborn", platform="tiktok"))
        assert settle(stack, keys[-1]) == b"done", round_
        assert len(api.seen("POST", RETRY)) == min(round_ + 1, 2)

    posts = api.seen("POST", RETRY)
    assert [p.body for p in posts] == [{"job_id": "job-stubborn"}] * 2
    assert [p.headers["idempotency-key"] for p in posts] == [f"{k}:{HANDLER}" for k in keys[:2]]
    calls = stack.client().hget(f"{stack.prefix}:upload-retry:job_id:job-stubborn", "calls")
    assert calls == b"2"
