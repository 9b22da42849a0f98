"""What the console's data layer is asked and answers: a query, a page of rows, one event with
its handlers' attempts, an estimate. Plain values: console/store.py reads them from Redis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from console.query import Filters


@dataclass(frozen=True)
class EventQuery(Filters):
    """The filters (console/query.py) and where a page starts; ``handler`` is an exact name,
    with ``state``: that pair's state; ``since``/``until``: receipt time, unix s."""

    cursor: str | None = None  # opaque, from Page.next_cursor
    limit: int = 50


@dataclass(frozen=True)
class EventRow:
    key: str
    event: str
    received_at: float
    state: str
    platforms: tuple[str, ...]
    profile: str | None
    handlers: dict[str, str]  # handler -> pair state
    erased: bool = False


@dataclass(frozen=True)
class Page:
    rows: list[EventRow]
    next_cursor: str | None
    scanned: int  # index entries looked at for this page (at most console.query.SCAN_BOUND)


@dataclass(frozen=True)
class Attempt:
    attempt: int
    at: float
    duration_s: float | None
    outcome: str  # done | retry | dead | lost
    error: str | None
    traceback: str | None


@dataclass(frozen=True)
class HandlerDetail:
    handler: str
    state: str
    token: str | None
    next_retry_at: float | None
    attempts: list[Attempt]


@dataclass(frozen=True)
class EventDetail:
    key: str
    event: str
    received_at: float
    state: str
    body: bytes | None  # raw body as received; None once erased
    headers: dict[str, str]
    erased: bool
    handlers: list[HandlerDetail]
    job_id: str | None
    post_ids: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    profile: str | None = None
    erased_by: str | None = None
    erased_at: float | None = None
    source: str = "webhook"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    count: int
    exact: bool  # False: extrapolated from the first ESTIMATE_BOUND candidates
