"""Built-in ``sql`` handler: the state users poll for today, kept in their own database.

Settings: ``UPHOOKS_SQL_ENABLED``, ``UPHOOKS_SQL_URL`` (SQLAlchemy URL; default a SQLite file
``var/uphooks.sqlite3``; ``postgresql://user@host/db`` uses psycopg 3, from the ``postgres``
extra). The tables are created on first use.

``uphooks_uploads``: one row per upload and platform. The upload is the event's ``job_id``; without
one, ``post:<post_id or publish_id>``; without those either (a failed upload not made through the
API), ``delivery:<delivery key>``, a row of its own.

``uphooks_accounts``: one row per connected account (``platform``, ``account_name``) with its status
and reason. ``profile_username`` keeps the last value seen when an event leaves it out.

Ordering: a row carries the version of the event it shows, ``(event_created_at, event_digest)``
(the digest is a SHA-256 of the body). An event overwrites a row only when its version is
greater, in one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement, so a late
``social_account_reauth_required`` cannot undo a newer ``social_account_connected``, re-applying
an event changes nothing, and the rows end the same whatever order events arrive in (two events
with the same ``created_at`` are ordered by digest). ``created_at`` is read as UTC and stored
without a zone.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uphooks.errors import ConfigurationError

try:
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.engine import Connection, Engine
except ImportError as exc:  # an optional extra
    raise ConfigurationError(
        "the sql handler needs SQLAlchemy: pip install 'uphooks[sql]' (or 'uphooks[postgres]')"
    ) from exc

from handlers.context import Context
from handlers.errors import PermanentError
from handlers.options import Options
from handlers.registry import Router
from handlers.sql_settings import SqlSettings, sql_settings
from uphooks.events import AccountEvent, BaseEvent, UploadCompleted
from uphooks.settings import Settings

HANDLER_NAME = "uphooks.sql"

metadata = sa.MetaData()


def _version_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("event_created_at", sa.DateTime(), nullable=False),
        sa.Column("event_digest", sa.String(64), nullable=False),
        sa.Column("delivery_key", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    ]


uploads = sa.Table(
    "uphooks_uploads",
    metadata,
    sa.Column("upload_id", sa.String(255), primary_key=True),
    sa.Column("platform", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.Text()),
    sa.Column("profile_username", sa.Text()),
    sa.Column("media_type", sa.Text()),
    sa.Column("title", sa.Text()),
    sa.Column("status", sa.String(16), nullable=False),  # succeeded | failed
    sa.Column("url", sa.Text()),
    sa.Column("post_id", sa.Text()),
    sa.Column("publish_id", sa.Text()),
    sa.Column("error", sa.Text()),
    *_version_columns(),
)

accounts = sa.Table(
    "uphooks_accounts",
    metadata,
    sa.Column("platform", sa.String(64), primary_key=True),
    sa.Column("account_name", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("profile_username", sa.Text()),
    sa.Column("user_email", sa.Text()),
    sa.Column("last_event", sa.String(64), nullable=False),
    *_version_columns(),
)

_SUPPORTED = ("sqlite", "postgresql")


def database_url(raw: str) -> sa.URL:
    """Parse and check ``UPHOOKS_SQL_URL``; plain ``postgresql://`` means psycopg 3."""
    try:
        url = sa.make_url(raw)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"UPHOOKS_SQL_URL is not a database URL: {exc}") from exc
    if url.get_backend_name() not in _SUPPORTED:
        raise ConfigurationError(
            f"UPHOOKS_SQL_URL: {url.get_backend_name()!r} is not supported; use sqlite:///path "
            "or postgresql://user@host/db"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    try:
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        raise ConfigurationError(
            f"UPHOOKS_SQL_URL needs the {url.get_driver_name()} driver: "
            "pip install 'uphooks[postgres]'"
        ) from exc
    return url


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _version(event: BaseEvent, ctx: Context) -> dict[str, Any]:
    assert event.created_at is not None  # required by both models
    body = ctx.body.encode() if ctx.body else event.model_dump_json().encode()
    now = _now()
    return {
        "event_created_at": _utc(event.created_at),
        "event_digest": hashlib.sha256(body).hexdigest(),
        "delivery_key": ctx.delivery_key,
        "received_at": datetime.fromtimestamp(ctx.received_at, UTC).replace(tzinfo=None)
        if ctx.received_at
        else None,
        "first_seen_at": now,
        "updated_at": now,
    }


def upload_id(event: UploadCompleted, delivery_key: str) -> str:
    if event.job_id:
        return event.job_id
    post = event.result.post_id or event.result.publish_id
    return f"post:{post}" if post else f"delivery:{delivery_key}"


def upload_row(event: UploadCompleted, ctx: Context) -> dict[str, Any]:
    result = event.result
    return {
        "upload_id": upload_id(event, ctx.delivery_key),
        "platform": event.platform,
        "job_id": event.job_id,
        "profile_username": event.profile_username,
        "media_type": event.media_type,
        "title": event.title,
        "status": "succeeded" if result.success else "failed",
        "url": result.url,
        "post_id": result.post_id,
        "publish_id": result.publish_id,
        "error": result.error,
        **_version(event, ctx),
    }


def account_row(event: AccountEvent, ctx: Context) -> dict[str, Any]:
    return {
        "platform": event.platform,
        "account_name": event.account_name,
        "status": event.status,
        "reason": event.reason,
        "profile_username": event.profile_username,
        "user_email": event.user_email,
        "last_event": event.event,
        **_version(event, ctx),
    }


def upsert(conn: Connection, table: sa.Table, row: dict[str, Any]) -> None:
    """Insert, or overwrite only when ``row`` is a newer version than the stored one."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table).values(**row)
    new, old = stmt.excluded, table.c
    newer = sa.or_(
        old.event_created_at < new.event_created_at,
        sa.and_(
            old.event_created_at == new.event_created_at,
            old.event_digest < new.event_digest,
        ),
    )
    keys = [c.name for c in table.primary_key.columns]
    changes: dict[str, Any] = {
        name: new[name] for name in row if name not in keys and name != "first_seen_at"
    }
    if "profile_username" in changes and table is accounts:
        changes["profile_username"] = sa.func.coalesce(new.profile_username, old.profile_username)
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes, where=newer))


class Store:
    """The database, opened lazily once per process (connections must not cross a fork)."""

    def __init__(self, url: sa.URL) -> None:
        self.url = url
        self._engine: tuple[int, Engine] | None = None

    def engine(self) -> Engine:
        if self._engine is None or self._engine[0] != os.getpid():
            self._engine = (os.getpid(), self._open())
        return self._engine[1]

    def _open(self) -> Engine:
        if self.url.get_backend_name() == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(self.url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _wal(dbapi_conn: Any, _: Any) -> None:
                # Several worker processes write one file: WAL lets readers and a writer overlap.
                dbapi_conn.execute("PRAGMA journal_mode=WAL")
        else:
            engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=2)
        try:
            metadata.create_all(engine)
        except sa.exc.DBAPIError:
            # Two processes creating the tables at once: one loses; the tables are there now.
            metadata.create_all(engine)
        return engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine[1].dispose()
            self._engine = None

    def apply(self, event: BaseEvent, ctx: Context) -> None:
        if isinstance(event, UploadCompleted):
            table, row = uploads, upload_row(event, ctx)
        elif isinstance(event, AccountEvent):
            table, row = accounts, account_row(event, ctx)
        else:
            raise PermanentError(f"the sql handler does not store {ctx.event_name!r} events")
        with self.engine().begin() as conn:
            upsert(conn, table, row)


def build_router(settings: Settings) -> Router:
    """The plugin's entry: built from its own settings (handlers/sql_settings.py)."""
    return router_for(sql_settings())


def router_for(settings: SqlSettings) -> Router:
    store = Store(database_url(settings.url))
    router = Router()

    @router.on(
        "upload_completed",
        "social_account_connected",
        "social_account_disconnected",
        "social_account_reauth_required",
        name=HANDLER_NAME,
        options=Options(queue=settings.queue),
    )
    def sql(event: BaseEvent, ctx: Context) -> None:
        store.apply(event, ctx)

    return router
