"""The idempotency key rule (receiver/delivery_key.py)."""

from __future__ import annotations

import json
from typing import Any

from receiver.delivery_key import delivery_key
from tests.conftest import fixture_bodies


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fixture_bodies()[name])
    return data


def test_header_id_wins_and_odd_ids_are_hashed() -> None:
    body = load("upload_completed.json")
    assert delivery_key("dlv_01HX", body) == "d:dlv_01HX"
    odd = delivery_key("id with spaces/and{braces}", body)
    assert odd.startswith("d:") and " " not in odd and len(odd) == 42


def test_upload_key_ignores_created_at_when_job_and_ids_are_known() -> None:
    body = load("upload_completed.json")
    again = dict(body, created_at="2024-03-15T14:31:00.000000", caption="edited")
    assert delivery_key(None, body) == delivery_key(None, again)
    other_platform = dict(body, platform="tiktok")
    assert delivery_key(None, body) != delivery_key(None, other_platform)


def test_failed_uploads_are_told_apart_by_time_and_error() -> None:
    body = load("upload_completed_failed.json")
    later = dict(body, created_at="2024-03-16T10:00:00.000000")
    assert delivery_key(None, body) != delivery_key(None, later)
    assert delivery_key(None, body) == delivery_key(None, json.loads(json.dumps(body)))


def test_account_events_key_on_platform_account_status_and_time() -> None:
    body = load("social_account_disconnected.json")
    assert delivery_key(None, body) == delivery_key(None, dict(body, reason="account_blocked"))
    assert delivery_key(None, body) != delivery_key(None, dict(body, status="connected"))
    reconnect = dict(body, created_at="2024-04-01T00:00:00.000000")
    assert delivery_key(None, body) != delivery_key(None, reconnect)


def test_unknown_events_hash_the_canonical_body() -> None:
    a = {"event": "comment_received", "id": 1, "text": "hi"}
    b = {"text": "hi", "id": 1, "event": "comment_received"}
    assert delivery_key(None, a) == delivery_key(None, b)
    assert delivery_key(None, a) != delivery_key(None, dict(a, id=2))
    assert delivery_key(None, a).startswith("e:")


def test_the_six_fixtures_have_six_keys() -> None:
    keys = {delivery_key(None, json.loads(body)) for body in fixture_bodies().values()}
    assert len(keys) == 6
