"""The read-back client against a fake Upload-Post API on 127.0.0.1: the exact requests it makes,
pagination, and 401/404/409/429/500 and slow answers as the caller sees them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_upload_post import KEY, FakeUploadPost, Reply, history_item
from uphooks.provider_api import ProviderAPIError
from uphooks.readback import BudgetExhausted, ReadBack, Unavailable

AUTH = f"Apikey {KEY}"


@pytest.fixture
def api() -> Iterator[FakeUploadPost]:
    with FakeUploadPost() as fake:
        yield fake


def client(fake: FakeUploadPost, **options: object) -> tuple[ReadBack, list[float]]:
    slept: list[float] = []
    options.setdefault("timeout", 2.0)
    return ReadBack(fake.url, KEY, sleep=slept.append, **options), slept  # type: ignore[arg-type]


def test_history_pages_until_the_total_is_read_with_the_documented_query(
    api: FakeUploadPost,
) -> None:
    api.history = [
        history_item("x", success=True, at=f"2024-03-15T14:{59 - i:02d}:00Z", post_id=str(i))
        for i in range(23)
    ]
    rb, _ = client(api)
    with rb:
        items = list(rb.history(limit=10))
    assert [i["platform_post_id"] for i in items] == [str(i) for i in range(23)]
    assert api.lines() == [
        "GET /api/uploadposts/history?limit=10&page=1",
        "GET /api/uploadposts/history?limit=10&page=2",
        "GET /api/uploadposts/history?limit=10&page=3",
    ]
    assert {r.headers["authorization"] for r in api.requests} == {AUTH}
    assert rb.used == 3


def test_a_refused_key_is_one_line_that_never_shows_the_key(api: FakeUploadPost) -> None:
    rb = ReadBack(api.url, KEY + "-wrong", sleep=lambda _: None)
    with rb, pytest.raises(ProviderAPIError) as caught:
        rb.history_page(1)
    text = str(caught.value)
    assert text.startswith("the API key was refused (HTTP 401: Invalid or expired token)")
    assert "\n" not in text and KEY not in text
    assert len(api.requests) == 1  # a refused key is not tried again


def test_429_waits_at_least_retry_after_and_500_backs_off_then_the_answer_is_read(
    api: FakeUploadPost,
) -> None:
    api.script["/api/uploadposts/history"].extend(
        [
            Reply(429, {"message": "slow down"}, {"Retry-After": "7"}),
            Reply(500, {"error": "boom", "details": "db"}),
        ]
    )
    api.history = [history_item("tiktok", success=True, at="2024-03-15T14:30:00Z", post_id="1")]
    rb, slept = client(api, backoff=0.5)
    with rb:
        page = rb.history_page(1, 10)
    assert page["total"] == 1
    assert len(api.requests) == 3
    assert slept[0] >= 7  # Retry-After honoured
    assert 0 < slept[1] <= 60


def test_a_server_that_keeps_failing_is_given_up_after_the_attempts(api: FakeUploadPost) -> None:
    api.script["/api/uploadposts/history"].extend([Reply(503, {"error": "down"})] * 5)
    rb, slept = client(api, attempts=3)
    with rb, pytest.raises(Unavailable, match="HTTP 503: down"):
        rb.history_page(1)
    assert len(api.requests) == 3 and len(slept) == 2


def test_a_slow_answer_is_a_timeout_not_a_hang(api: FakeUploadPost) -> None:
    api.script["/api/uploadposts/users"].append(Reply(200, {"profiles": []}, delay=1.5))
    rb, _ = client(api, timeout=0.3, attempts=1)
    with rb, pytest.raises(Unavailable, match="did not answer in time"):
        rb.users()


def test_the_request_budget_stops_a_pass(api: FakeUploadPost) -> None:
    api.history = [
        history_item("x", success=True, at="2024-03-15T14:30:00Z", post_id=str(i))
        for i in range(50)
    ]
    rb, _ = client(api, budget=2)
    with rb, pytest.raises(BudgetExhausted, match="budget of this pass"):
        list(rb.history(limit=10))
    assert len(api.requests) == 2


def test_status_of_an_unknown_upload_is_not_found(api: FakeUploadPost) -> None:
    api.statuses["req-1"] = [{"request_id": "req-1", "status": "in_progress", "results": []}]
    rb, _ = client(api)
    with rb:
        assert rb.status(request_id="req-1")["status"] == "in_progress"
        assert rb.status(job_id="job-9")["status"] == "not_found"
    assert api.lines() == [
        "GET /api/uploadposts/status?request_id=req-1",
        "GET /api/uploadposts/status?job_id=job-9",
    ]


def test_retry_posts_the_id_with_an_idempotency_key_and_is_never_repeated(
    api: FakeUploadPost,
) -> None:
    api.retryable["req-1"] = 1
    rb, _ = client(api)
    with rb:
        assert rb.retry(request_id="req-1", idempotency_key="k:1").status_code == 200
        assert rb.retry(request_id="req-1", idempotency_key="k:2").status_code == 409
        assert rb.retry(job_id="nope").status_code == 404
        api.script["/api/uploadposts/posts/retry"].append(Reply(500, {"error": "x"}))
        assert rb.retry(request_id="req-1").status_code == 500  # the caller decides
    posts = api.seen("POST", "/api/uploadposts/posts/retry")
    assert [p.body for p in posts] == [
        {"request_id": "req-1"},
        {"request_id": "req-1"},
        {"job_id": "nope"},
        {"request_id": "req-1"},
    ]
    assert [p.headers.get("idempotency-key") for p in posts] == ["k:1", "k:2", None, None]
