"""The console's data: events by filter, one event with its attempts, counts, bulk selections.

Read from the indexes the pipeline writes where the data is born (docs/design.md section 11):
no SCAN, no walk over every delivery. A list page is one Lua call (console/query.py); one event
is two pipelined round trips (console/detail.py). All of it is read-only but
:meth:`ConsoleStore.erase_payload` (console/erasure.py). What it answers with is in
console/shapes.py, how the stored data reads in console/records.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import redis

from console import detail, erasure
from console import lookup as finder
from console.query import SCAN_BOUND, STATES, Pager, plan, text
from console.records import row_of
from console.shapes import (
    Attempt,
    Estimate,
    EventDetail,
    EventQuery,
    EventRow,
    HandlerDetail,
    Page,
)
from uphooks.keys import Keys

__all__ = [
    "STATES",
    "Attempt",
    "ConsoleStore",
    "Estimate",
    "EventDetail",
    "EventQuery",
    "EventRow",
    "HandlerDetail",
    "Page",
]

#: Candidates an estimate walks (in calls of SCAN_BOUND) before it extrapolates, when filters
#: cross indexes.
ESTIMATE_BOUND = 20_000


class ConsoleStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        retention_s: float | None = None,
        scan_bound: int = SCAN_BOUND,
    ) -> None:
        """``retention_s``: UPHOOKS_DEDUP_TTL_SECONDS (read from the settings when None);
        ``scan_bound``: index entries one list call looks at, at most."""
        if retention_s is None:
            from uphooks.settings import get_settings

            retention_s = get_settings().dedup_ttl_seconds
        self._r = client
        self._keys = keys
        self._pager = Pager(client, keys, retention_s)
        self._bound = scan_bound

    # -- lists -----------------------------------------------------------------------------
    def list_events(self, q: EventQuery) -> Page:
        """Deliveries that match, newest first; ``next_cursor`` continues (None: the end)."""
        walk = self._pager.walk(q, q.cursor, q.limit, bound=self._bound)
        rows = [row_of(item) for item in walk.found]
        return Page(rows, walk.next_cursor, walk.scanned)

    def newest_since(self, ts: float, q: EventQuery) -> list[EventRow]:
        """Deliveries received after ``ts`` that match (newest first, at most ``q.limit``)."""
        since = ts if q.since is None else max(ts, q.since)
        page = self.list_events(replace(q, since=since, cursor=None))
        return [row for row in page.rows if row.received_at > ts]

    def dead_letters(self, q: EventQuery) -> Page:
        """Deliveries with a dead pair (of ``q.handler`` when given), newest first. Dead letters
        whose delivery is past its retention are in ``uphooks dlq`` only."""
        return self.list_events(replace(q, state="dead"))

    def counts(self) -> dict[str, int]:
        """Deliveries retained per state (one ZCOUNT each; done is the rest of ``events``)."""
        floor = repr(self._pager.floor(None))
        pipe = self._r.pipeline(transaction=False)
        pipe.zcount(self._keys.events_index, floor, "+inf")
        others = [s for s in STATES if s != "done"]
        for s in others:
            pipe.zcount(self._keys.index_state(s), floor, "+inf")
        total, *counted = (int(n) for n in pipe.execute())
        out = dict(zip(others, counted, strict=True))
        out["done"] = max(0, total - sum(counted))
        return {s: out[s] for s in STATES}

    def estimate(self, q: EventQuery) -> int:
        """How many deliveries match: exact for one filter (or none), else extrapolated from
        the first :data:`ESTIMATE_BOUND` candidates; :meth:`estimate_detail` says which."""
        return self.estimate_detail(q).count

    def estimate_detail(self, q: EventQuery) -> Estimate:
        if plan(self._keys, q).exact_count:
            return Estimate(self._pager.walk(q, None, 1, mode="count", bound=0).candidates, True)
        matched = scanned = candidates = 0
        cursor: str | None = None
        # In calls of at most SCAN_BOUND candidates, so Redis is never held for long.
        while scanned < ESTIMATE_BOUND:
            walk = self._pager.walk(q, cursor, 1, mode="count", bound=self._bound)
            matched += int(text(walk.found[0])) if walk.found else 0
            scanned += walk.scanned
            candidates = candidates or walk.candidates
            cursor = walk.next_cursor
            if cursor is None:
                return Estimate(matched, True)
        return Estimate(round(matched * candidates / scanned), False)

    def iter_keys(self, q: EventQuery, batch: int = 500) -> Iterator[list[str]]:
        """Every matching delivery key, newest first, in lists of at most ``batch``; a
        delivery arriving meanwhile is not included (the walk starts below the newest)."""
        cursor = q.cursor
        while True:
            walk = self._pager.walk(q, cursor, batch, mode="keys", bound=max(batch, self._bound))
            keys = [text(k) for k in walk.found]
            if keys:
                yield keys
            if walk.next_cursor is None:
                return
            cursor = walk.next_cursor

    def lookup(self, term: str) -> list[str]:
        """Deliveries a delivery key, job_id or platform post id names, newest first."""
        return finder.lookup(self._r, self._keys, self._pager, term)

    # -- one event -------------------------------------------------------------------------
    def event(self, key: str) -> EventDetail | None:
        return detail.read_event(self._r, self._keys, key)

    def erase_payload(self, key: str, who: str) -> bool:
        """Replace the stored body (and the copies dead letters keep) with nothing, keeping
        the outcome rows, the attempt history and the indexes; False when there is no such
        delivery. What the console lists by (platforms, profile, job and post ids) is kept."""
        return erasure.erase_payload(self._r, self._keys, key, who)
