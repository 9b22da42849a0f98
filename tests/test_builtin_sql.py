"""The built-in ``sql`` handler on SQLite and on a real PostgreSQL server.

PostgreSQL: ``UPHOOKS_TEST_POSTGRES_URL``, else the local server at 127.0.0.1:5432 (database
``test``); each test works in a schema of its own, dropped afterwards. When no server answers,
the PostgreSQL cases are skipped and say why.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from handlers import Context
from handlers.sql import HANDLER_NAME, Store, accounts, database_url, router_for, uploads
from handlers.sql_settings import SqlSettings
from tests.conftest import Stack, fixture_bodies, wait_for
from uphooks.errors import ConfigurationError
from uphooks.events import parse_event

BODIES = fixture_bodies()
POSTGRES = os.environ.get(
    "UPHOOKS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_schema() -> Iterator[str]:
    admin = sa.create_engine(POSTGRES, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = " ".join(str(exc.orig).split())[:120]
        pytest.skip(f"no PostgreSQL at {POSTGRES} ({reason}); set UPHOOKS_TEST_POSTGRES_URL")
    schema = f"uphooks_test_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state/uphooks.sqlite3"
    else:
        yield from _postgres_schema()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(database_url(db_url))
    try:
        yield s
    finally:
        s.close()


def event(name: str, **changes: Any) -> tuple[Any, Context]:
    payload = json.loads(BODIES[name]) | changes
    body = json.dumps(payload)
    key = f"e:{uuid.uuid5(uuid.NAMESPACE_URL, body).hex}"
    ctx = Context(f"{key}:{HANDLER_NAME}", key, HANDLER_NAME, 1, payload["event"], 1.7e9, body=body)
    return parse_event(payload), ctx


def apply(store: Store, name: str, **changes: Any) -> None:
    store.apply(*event(name, **changes))


def rows(store: Store, table: sa.Table) -> list[dict[str, Any]]:
    with store.engine().connect() as conn:
        order = list(table.primary_key.columns)
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(*order))]


def account(store: Store) -> dict[str, Any]:
    [row] = rows(store, accounts)
    return row


CONNECTED = "social_account_connected.json"
REAUTH = "social_account_reauth_required.json"
DISCONNECTED = "social_account_disconnected.json"
SAME_ACCOUNT = {"platform": "youtube", "account_name": "UCxxxxxxxxx"}


def test_a_late_older_event_does_not_undo_a_newer_one(store: Store) -> None:
    apply(store, CONNECTED, **SAME_ACCOUNT, created_at="2024-03-15T15:00:00.000000")
    apply(store, REAUTH, created_at="2024-03-15T14:30:00.000000")  # older, arrives late
    row = account(store)
    assert (row["status"], row["last_event"], row["reason"]) == (
        "connected",
        "social_account_connected",
        None,
    )
    apply(store, REAUTH, created_at="2024-03-15T16:00:00.000000")  # a newer one wins
    row = account(store)
    assert (row["status"], row["reason"]) == ("reauth_required", "token_refresh_threshold_exceeded")
    assert row["profile_username"] == "your_profile_username"  # kept: reauth events lack it
    assert str(row["event_created_at"]) == "2024-03-15 16:00:00"


def test_reapplying_the_same_event_changes_nothing(store: Store) -> None:
    apply(store, DISCONNECTED)
    apply(store, "upload_completed_failed.json")
    before = (rows(store, accounts), rows(store, uploads))
    apply(store, DISCONNECTED)
    apply(store, "upload_completed_failed.json")
    assert (rows(store, accounts), rows(store, uploads)) == before


def test_the_final_state_does_not_depend_on_arrival_order(db_url: str) -> None:
    same_time = {"created_at": "2024-03-15T14:30:00.000000", **SAME_ACCOUNT}
    sequence = [
        (CONNECTED, {**SAME_ACCOUNT, "created_at": "2024-03-15T14:00:00.000000"}),
        (DISCONNECTED, same_time),
        (REAUTH, same_time),  # the same created_at as the one before: the digest decides
    ]
    finals = []
    for order in (sequence, sequence[::-1], [sequence[1], sequence[0], sequence[2]]):
        s = Store(database_url(db_url))
        try:
            with s.engine().begin() as conn:
                conn.execute(accounts.delete())
            for name, changes in order:
                apply(s, name, **changes)
            row = account(s)
            finals.append((row["status"], row["event_digest"], row["event_created_at"]))
        finally:
            s.close()
    assert finals[0] == finals[1] == finals[2]
    assert str(finals[0][2]) == "2024-03-15 14:30:00"


def test_one_upload_row_per_upload_and_platform(store: Store) -> None:
    failed = "upload_completed_failed.json"  # job_7f3c9a1e on tiktok
    apply(store, failed)
    apply(store, failed, platform="instagram", result={"success": True, "url": "https://i/p"})
    retried = {"success": True, "url": "https://t/v", "post_id": "p1", "publish_id": "p1"}
    apply(store, failed, result=retried, created_at="2024-03-15T15:00:00.000000")
    apply(store, "upload_completed_without_job_id.json")  # no job_id: keyed by its post id
    got = {(r["upload_id"], r["platform"]): r for r in rows(store, uploads)}
    assert sorted(got) == [
        ("job_7f3c9a1e", "instagram"),
        ("job_7f3c9a1e", "tiktok"),
        ("post:1769000000000000000", "x"),
    ]
    tiktok = got[("job_7f3c9a1e", "tiktok")]
    assert (tiktok["status"], tiktok["url"], tiktok["error"]) == ("succeeded", "https://t/v", None)
    assert tiktok["first_seen_at"] <= tiktok["updated_at"]
    no_ids = {"success": False, "error": "boom"}
    payload, ctx = event("upload_completed_without_job_id.json", result=no_ids)
    store.apply(payload, ctx)
    assert (f"delivery:{ctx.delivery_key}", "x") in {
        (r["upload_id"], r["platform"]) for r in rows(store, uploads)
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@127.0.0.1/test", "not supported"),
        ("not a url", "not a database URL"),
    ],
)
def test_unsupported_urls_stop_the_build(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        router_for(SqlSettings(url=url))


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    assert database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    [spec] = list(router_for(SqlSettings(url="sqlite:///x.db", queue="db")))
    assert (spec.name, spec.queue) == (HANDLER_NAME, "db")
    assert "upload_completed" in spec.events and "*" not in spec.events


def test_through_the_pipeline_into_a_sqlite_file(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "db" / "state.sqlite3"
    ingress = stack.ingress()
    stack.worker(
        "",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
        UPHOOKS_SQL_ENABLED="true",
        UPHOOKS_SQL_URL=f"sqlite:///{path}",
    )
    newer = json.loads(BODIES[CONNECTED]) | SAME_ACCOUNT | {"created_at": "2024-03-16T09:00:00"}
    assert ingress.post(json.dumps(newer)).status_code == 202
    assert ingress.post(BODIES[REAUTH]).status_code == 202  # older
    upload = ingress.post(BODIES["upload_completed.json"]).json()["idempotency_key"]
    engine = sa.create_engine(f"sqlite:///{path}")
    try:

        def state() -> tuple[list[Any], list[Any]]:
            if not path.exists():
                return [], []
            with engine.connect() as conn:
                # create_all makes the tables one by one: wait for both
                found = sa.inspect(conn)
                if not (found.has_table("uphooks_uploads") and found.has_table("uphooks_accounts")):
                    return [], []
                a = conn.execute(sa.select(accounts.c.account_name, accounts.c.status)).all()
                u = conn.execute(sa.select(uploads.c.upload_id, uploads.c.status)).all()
                return [tuple(r) for r in a], [tuple(r) for r in u]

        wait_for(
            lambda: state() == ([("UCxxxxxxxxx", "connected")], [("a1b2c3d4e5f6...", "succeeded")]),
            what="the newer account state and the upload",
        )
        stack.wait_settled(upload, {HANDLER_NAME: "done"})
    finally:
        engine.dispose()
