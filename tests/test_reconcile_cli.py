"""``uphooks watch`` and ``uphooks drift`` run as a user would (``python -m uphooks_cli``) against a
real Redis, a real ingress and the fake Upload-Post API on 127.0.0.1: the polls and their backoff,
what is printed, the exit codes, and what ``--inject`` leaves in the events index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from tests.conftest import Stack
from tests.fake_upload_post import KEY, FakeUploadPost

STATUS = "/api/uploadposts/status"


@pytest.fixture
def api() -> Iterator[FakeUploadPost]:
    with FakeUploadPost() as fake:
        yield fake


def api_env(api: FakeUploadPost) -> dict[str, str]:
    return {"UPHOOKS_UPLOAD_POST_API_URL": api.url, "UPHOOKS_UPLOAD_POST_API_KEY": KEY}


def events(stack: Stack, event: str) -> list[dict[str, Any]]:
    done = stack.cli("events", "ls", "--event", event, "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_watch_polls_with_backoff_until_completed_and_inject_adds_only_the_unreported_platform(
    stack: Stack, api: FakeUploadPost
) -> None:
    at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    tiktok = {
        "platform": "tiktok",
        "success": True,
        "message": "posted",
        "upload_timestamp": at,
        "platform_post_id": "tt-111",
    }
    instagram = {
        "platform": "instagram",
        "success": True,
        "message": "posted",
        "upload_timestamp": at,
        "platform_post_id": "ig-222",
    }
    top = {"request_id": "req-watch", "total": 2}
    api.statuses["req-watch"] = [
        top | {"status": "processing", "completed": 0, "results": []},
        top | {"status": "in_progress", "completed": 1, "results": [tiktok]},
        top | {"status": "completed", "completed": 2, "results": [tiktok, instagram]},
    ]
    # The tiktok result's webhook arrived; the instagram one never did.
    ingress = stack.ingress()
    webhook = {
        "event": "upload_completed",
        "job_id": "req-watch",
        "user_email": "owner@example.com",
        "profile_username": "alpha",
        "platform": "tiktok",
        "result": {"success": True, "post_id": "tt-111", "publish_id": "tt-111", "error": None},
        "created_at": at,
    }
    assert ingress.post(json.dumps(webhook)).status_code == 202

    done = stack.cli("watch", "--request-id", "req-watch", "--inject", **api_env(api))

    assert done.returncode == 0, done.stdout + done.stderr
    polls = api.seen("GET", STATUS)
    assert [p.query for p in polls] == [{"request_id": "req-watch"}] * 3
    # 1 s, then 2 s between polls (doubling), never sooner.
    gaps = [b.at - a.at for a, b in pairwise(polls)]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, gaps
    assert gaps[1] < 4.0, gaps
    lines = done.stdout.splitlines()
    assert lines[:7] == [
        "status: processing (0/2 platforms)",
        "status: in_progress (1/2 platforms)",
        "    tiktok: ok",
        "status: completed (2/2 platforms)",
        "    tiktok: ok",
        "    instagram: ok",
        lines[6],
    ]
    assert lines[6].startswith("already delivered: ") and "tiktok" in lines[6]
    assert lines[7].startswith("injected ") and "instagram" in lines[7]
    assert len(lines) == 8

    rows = events(stack, "upload_completed")
    by_platform = {row["platform"]: row for row in rows}
    assert len(rows) == 2, rows
    assert by_platform["tiktok"]["source"] == "webhook"
    assert by_platform["instagram"]["source"] == "reconciled"
    assert by_platform["instagram"]["key"] in lines[7]
    shown = stack.cli("events", "show", by_platform["instagram"]["key"], "--json")
    body = json.loads(shown.stdout)["body"]
    assert body["request_id"] == "req-watch"
    assert body["result"]["post_id"] == "ig-222"


def test_watch_of_an_unknown_upload_is_one_line_and_a_non_zero_exit(
    stack: Stack, api: FakeUploadPost
) -> None:
    done = stack.cli("watch", "--job-id", "job-nobody-knows", **api_env(api))

    assert done.returncode != 0
    assert [p.query for p in api.seen("GET", STATUS)] == [{"job_id": "job-nobody-knows"}]
    out = (done.stdout + done.stderr).splitlines()
    assert out == [
        "not found: Upload-Post knows no upload with job_id job-nobody-knows; check the id and "
        "that UPHOOKS_UPLOAD_POST_API_KEY is the uploading account's"
    ]
    assert "Traceback" not in done.stderr


def account_event(event: str, platform: str, status: str) -> dict[str, Any]:
    return {
        "event": event,
        "user_email": "owner@example.com",
        "platform": platform,
        "account_name": f"alpha_{platform}",
        "status": status,
        "profile_username": "alpha",
        "created_at": datetime.now(UTC).isoformat(),
    }


def test_drift_names_the_unreported_account_and_inject_adds_its_event_once(
    stack: Stack, api: FakeUploadPost
) -> None:
    api.profiles = [
        {
            "username": "alpha",
            "created_at": "2024-01-01T00:00:00",
            "social_accounts": {
                "tiktok": {"username": "alpha_tiktok"},
                "instagram": {"username": "alpha_instagram"},
                "x": "",
            },
        }
    ]
    ingress = stack.ingress()
    seen = [
        account_event("social_account_connected", "tiktok", "connected"),
        account_event("social_account_disconnected", "x", "disconnected") | {"reason": "manual"},
    ]
    for body in seen:
        assert ingress.post(json.dumps(body)).status_code == 202

    report = stack.cli("drift", **api_env(api))
    assert report.returncode == 1, report.stdout + report.stderr
    assert report.stdout.splitlines() == [
        "alpha instagram: Upload-Post says connected, the last account event said nothing"
    ]
    assert events(stack, "social_account_connected")[0]["platform"] == "tiktok"

    first = stack.cli("drift", "--inject", **api_env(api))
    second = stack.cli("drift", "--inject", **api_env(api))

    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == report.stdout.splitlines()[0]
    assert lines[1].startswith("injected ") and lines[1].endswith(": alpha instagram")
    assert len(lines) == 2
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.splitlines() == [
        "no drift: 1 profile(s) agree with the account events kept"
    ]
    connected = events(stack, "social_account_connected")
    assert sorted((r["platform"], r["source"]) for r in connected) == [
        ("instagram", "reconciled"),
        ("tiktok", "webhook"),
    ]
    assert len(events(stack, "social_account_disconnected")) == 1
    assert len(api.seen("GET", "/api/uploadposts/users")) == 3
