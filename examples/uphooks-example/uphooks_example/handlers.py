"""Two handlers that keep what needs a human's attention in a SQLite file.

- ``example.failed_upload``: every upload that failed, with the platform's error;
- ``example.account_attention``: accounts that were disconnected or must be reconnected.

What to copy from here:

- one ``Router`` per plugin module, exposed as ``router``; the entry point in pyproject.toml names
  this module;
- explicit, stable handler names (``name=...``): markers and dead letters are keyed by them;
- per-handler options (``options=Options(...)``) only where the default does not fit, kept
  apart from the filters (``success=False``);
- the plugin's own settings class with its own prefix (``UPHOOKS_EXAMPLE_*``), read lazily;
- the effect keyed by ``ctx.pair_key`` (a primary key here), so a handler run twice for
  one delivery (a crash after the write, before the worker recorded it) still writes one row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from handlers import AccountEvent, Context, Options, Router, UploadCompleted

router = Router()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failed_uploads (
    pair_key TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    profile TEXT,
    title TEXT,
    error TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS account_attention (
    pair_key TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    account TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created_at TEXT NOT NULL
);
"""


class ExampleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UPHOOKS_EXAMPLE_", extra="ignore")

    db_path: Path = Path("uphooks-example.sqlite3")


@lru_cache(maxsize=1)
def settings() -> ExampleSettings:
    return ExampleSettings()


@contextmanager
def database() -> Iterator[sqlite3.Connection]:
    path = settings().db_path
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:  # one transaction: committed on success, rolled back on error
            conn.executescript(_SCHEMA)
            yield conn
    finally:
        conn.close()


@router.on(
    "upload_completed", success=False, name="example.failed_upload", options=Options(max_attempts=5)
)
def failed_upload(event: UploadCompleted, ctx: Context) -> None:
    with database() as db:
        added = db.execute(
            "INSERT OR IGNORE INTO failed_uploads VALUES (?, ?, ?, ?, ?, ?)",
            (
                ctx.pair_key,
                event.platform,
                event.profile_username,
                event.title,
                event.result.error,
                event.created_at.isoformat(),
            ),
        ).rowcount
    ctx.log.info("failed upload on %s %s", event.platform, "kept" if added else "already kept")


@router.on(
    "social_account_disconnected",
    "social_account_reauth_required",
    name="example.account_attention",
    options=Options(backoff=(2, 60), time_limit=10),
)
def account_attention(event: AccountEvent, ctx: Context) -> None:
    # AccountEvent: the fields every account event has, whichever of the two this is.
    with database() as db:
        db.execute(
            "INSERT OR IGNORE INTO account_attention VALUES (?, ?, ?, ?, ?, ?)",
            (
                ctx.pair_key,
                event.platform,
                event.account_name,
                event.status,
                event.reason,
                event.created_at.isoformat(),
            ),
        )
