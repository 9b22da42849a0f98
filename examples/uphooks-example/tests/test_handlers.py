"""The plugin's own tests: routing through its router, and the effect of each handler.

Handlers are plain functions, so a test builds the typed event and a Context and calls them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from uphooks_example import handlers

from handlers import Context, SocialAccountReauthRequired, UploadCompleted

FAILED_UPLOAD: dict[str, Any] = {
    "event": "upload_completed",
    "job_id": "job_1",
    "user_email": "someone@example.com",
    "profile_username": "acme",
    "platform": "tiktok",
    "media_type": "video",
    "title": "Launch",
    "result": {"success": False, "error": "duration exceeds the account's limit"},
    "created_at": "2024-03-15T14:30:00.000000",
}
REAUTH: dict[str, Any] = {
    "event": "social_account_reauth_required",
    "user_email": "someone@example.com",
    "platform": "youtube",
    "account_name": "UCxxxx",
    "status": "reauth_required",
    "reason": "token_refresh_threshold_exceeded",
    "created_at": "2024-03-15T14:30:00.000000",
}


@pytest.fixture(autouse=True)
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "example.sqlite3"
    monkeypatch.setenv("UPHOOKS_EXAMPLE_DB_PATH", str(path))
    handlers.settings.cache_clear()
    yield path
    handlers.settings.cache_clear()


def ctx_for(handler: str, key: str = "e:abc") -> Context:
    return Context(
        pair_key=f"{key}:{handler}",
        delivery_key=key,
        handler_name=handler,
        attempt=1,
        event_name="test",
        received_at=0.0,
    )


def rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    # closing(): `with conn` only commits; Python 3.13 warns about a connection left open.
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(f"SELECT * FROM {table}"))


def names_for(payload: dict[str, Any]) -> list[str]:
    return [s.name for s in handlers.router.handlers_for(payload["event"], payload)]


def test_router_sends_each_event_to_the_right_handler() -> None:
    assert names_for(FAILED_UPLOAD) == ["example.failed_upload"]
    succeeded = {**FAILED_UPLOAD, "result": {"success": True, "url": "https://x"}}
    assert names_for(succeeded) == []
    assert names_for(REAUTH) == ["example.account_attention"]
    assert names_for({**REAUTH, "event": "social_account_connected"}) == []


def test_failed_upload_is_kept_once_per_pair_key(db_path: Path) -> None:
    event = UploadCompleted.model_validate(FAILED_UPLOAD)
    handlers.failed_upload(event, ctx_for("example.failed_upload"))
    handlers.failed_upload(event, ctx_for("example.failed_upload"))  # a rerun after a crash
    assert rows(db_path, "failed_uploads") == [
        (
            "e:abc:example.failed_upload",
            "tiktok",
            "acme",
            "Launch",
            "duration exceeds the account's limit",
            "2024-03-15T14:30:00",
        )
    ]


def test_account_needing_attention_is_kept(db_path: Path) -> None:
    event = SocialAccountReauthRequired.model_validate(REAUTH)
    handlers.account_attention(event, ctx_for("example.account_attention"))
    [row] = rows(db_path, "account_attention")
    assert row[1:5] == ("youtube", "UCxxxx", "reauth_required", "token_refresh_threshold_exceeded")
