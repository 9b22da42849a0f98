"""The console's data: events by filter, one event with its attempts, counts, bulk selections.

Read from the indexes the pipeline writes where the data is born (docs/design.md section 11):
no SCAN, no walk over every delivery. A list page is one Lua call (console/query.py); one event
is two pipelined round trips. All of it is read-only but :meth:`ConsoleStore.erase_payload`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import redis

from console.query import SCAN_BOUND, STATES, Filters, Pager, plan
from uphooks import indexes
from uphooks.indexes import lookup_bucket_seconds, term_value
from uphooks.keys import Keys
from workers.deadletter import ROUTING_HANDLER, entry_id

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
_SUFFIXES = ("@", "#", "!", "%", "^", "&", "=")
_RANK = {"done": 1, "pending": 2, "running": 3, "retrying": 4, "dead": 5}


@dataclass(frozen=True)
class EventQuery:
    state: str | None = None
    event: str | None = None
    platform: str | None = None
    profile: str | None = None
    handler: str | None = None  # an exact handler name; with ``state``: that pair's state
    since: float | None = None  # receipt time, unix s
    until: float | None = None
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


def pair_state(state: str, token: str | None) -> str:
    """The console's name for a ledger pair state (workers/index.lua ``ix_pair_state``)."""
    if state in ("queued", "waiting"):
        attempt = token.rsplit(".", 1)[-1] if token else "1"
        return "retrying" if attempt.isdigit() and int(attempt) > 1 else "pending"
    return state


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: object) -> dict[str, str]:
    if isinstance(raw, dict):
        return {_text(k): _text(v) for k, v in raw.items()}
    flat = [_text(v) for v in raw] if isinstance(raw, list) else []
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _handlers(fields: dict[str, str]) -> dict[str, str]:
    return {
        name: pair_state(value, fields.get(name + "#"))
        for name, value in sorted(fields.items())
        if not name.startswith("~") and not name.endswith(_SUFFIXES) and value != ""
    }


def _aggregate(fields: dict[str, str], handlers: dict[str, str]) -> str:
    if fields.get("~") == "unroutable":
        return "dead"
    worst = "done" if "~" in fields else "pending"
    for s in handlers.values():
        if _RANK.get(s, 0) > _RANK[worst]:
            worst = s
    return worst


@dataclass(frozen=True)
class _Record:
    event: str
    received_at: float
    payload: dict[str, Any]
    body: str | None
    headers: dict[str, str]
    erased: dict[str, Any] | None
    source: str

    @classmethod
    def parse(cls, raw: bytes) -> _Record:
        record = orjson.loads(raw)
        erased = record.get("erased")
        body = record.get("body")
        payload: Any = {}
        if isinstance(body, str) and not erased:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = {}
        return cls(
            event=str(record.get("event") or "?"),
            received_at=float(record.get("received_at") or 0.0),
            payload=payload if isinstance(payload, dict) else {},
            body=None if erased else (body if isinstance(body, str) else None),
            headers=dict(record.get("headers") or {}),
            erased=erased if isinstance(erased, dict) else None,
            source=str(record.get("source") or "webhook"),
        )

    def kept(self, name: str) -> Any:
        """What the body said (or, once erased, what the erasure kept of it)."""
        if self.erased is not None:
            return self.erased.get(name)
        return {
            "platforms": indexes.platforms_of(self.payload),
            "profile": indexes.profile_of(self.payload),
            "job_id": indexes.job_id_of(self.payload),
            "post_ids": indexes.post_ids_of(self.payload),
        }[name]


def _attempt(details: dict[str, Any]) -> Attempt:
    outcome = details.get("outcome")
    if not isinstance(outcome, str):
        outcome = "retry" if "next_at" in details else "dead" if details.get("error") else "done"
    duration = details.get("duration")
    return Attempt(
        attempt=int(details.get("attempt") or 0),
        at=float(details.get("at") or 0.0),
        duration_s=float(duration) if duration is not None else None,
        outcome=outcome,
        error=details.get("error"),
        traceback=details.get("traceback"),
    )


def _json(raw: object) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw if isinstance(raw, bytes | str) else b"")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


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
        walk = self._pager.walk(_filters(q), q.cursor, q.limit, bound=self._bound)
        rows = [self._row(item) for item in walk.found]
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
        f = _filters(q)
        if plan(self._keys, f).exact_count:
            return Estimate(self._pager.walk(f, None, 1, mode="count", bound=0).candidates, True)
        matched = scanned = candidates = 0
        cursor: str | None = None
        # In calls of at most SCAN_BOUND candidates, so Redis is never held for long.
        while scanned < ESTIMATE_BOUND:
            walk = self._pager.walk(f, cursor, 1, mode="count", bound=self._bound)
            matched += int(_text(walk.found[0])) if walk.found else 0
            scanned += walk.scanned
            candidates = candidates or walk.candidates
            cursor = walk.next_cursor
            if cursor is None:
                return Estimate(matched, True)
        return Estimate(round(matched * candidates / scanned), False)

    def iter_keys(self, q: EventQuery, batch: int = 500) -> Iterator[list[str]]:
        """Every matching delivery key, newest first, in lists of at most ``batch``; a
        delivery arriving meanwhile is not included (the walk starts below the newest)."""
        f, cursor = _filters(q), q.cursor
        while True:
            walk = self._pager.walk(f, cursor, batch, mode="keys", bound=max(batch, self._bound))
            keys = [_text(k) for k in walk.found]
            if keys:
                yield keys
            if walk.next_cursor is None:
                return
            cursor = walk.next_cursor

    def lookup(self, term: str) -> list[str]:
        """Deliveries a delivery key, job_id or platform post id names, newest first."""
        term = term.strip()
        if not term:
            return []
        width = lookup_bucket_seconds(self._pager.retention_s)
        first, last = int(self._pager.floor(None) // width), int(time.time() // width)
        value = term_value(term)
        pipe = self._r.pipeline(transaction=False)
        pipe.exists(self._keys.delivery(term))
        for bucket in range(first, last + 1):
            for kind in ("j", "p"):
                low = f"[{kind}:{value}|".encode()
                pipe.zrangebylex(self._keys.lookup_bucket(bucket), low, low + b"\xff")
        exists, *found = pipe.execute()
        keys = [term] if exists else []
        for members in found:
            # "<term>|<key>": a term never holds "|" (term_value), a key may.
            keys += [_text(m).partition("|")[2] for m in members]
        keys = list(dict.fromkeys(keys))
        if keys == [term] or not keys:
            return keys
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.zscore(self._keys.events_index, key)
            pipe.exists(self._keys.delivery(key))
        got = pipe.execute()
        live = [(float(got[2 * i] or 0), k) for i, k in enumerate(keys) if got[2 * i + 1]]
        return [k for _, k in sorted(live, reverse=True)]

    # -- one event -------------------------------------------------------------------------
    def event(self, key: str) -> EventDetail | None:
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self._keys.delivery(key))
        pipe.hgetall(self._keys.handled(key))
        pipe.zscore(self._keys.events_index, key)
        raw, handled, score = pipe.execute()
        if raw is None:
            return None
        record = _Record.parse(raw)
        fields = _fields(handled)
        states = _handlers(fields)
        names = list(states)
        if fields.get("~") == "unroutable":
            names.append(ROUTING_HANDLER)
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.lrange(self._keys.attempts(key, name), 0, -1)
            pipe.get(self._keys.dlq_entry(entry_id(key, name)))
        got = pipe.execute()
        handlers = []
        for i, name in enumerate(names):
            history, dead = got[2 * i], _json(got[2 * i + 1])
            attempts = [_attempt(_json(h)) for h in history]
            last = _json(fields.get(name + "@", "").encode())
            if last and (not attempts or _attempt(last).at > attempts[-1].at):
                # A first run that succeeded is only in "<handler>@" (workers/index.lua).
                attempts.append(_attempt(last))
            if not attempts and dead:
                attempts = [
                    _attempt(
                        {
                            "attempt": dead.get("attempts"),
                            "at": dead.get("dead_at"),
                            "outcome": "dead",
                            "error": dead.get("error"),
                            "traceback": dead.get("traceback"),
                        }
                    )
                ]
            if attempts and attempts[-1].outcome == "dead" and not attempts[-1].traceback and dead:
                attempts[-1] = replace(attempts[-1], traceback=dead.get("traceback"))
            state = states.get(name, "dead")
            next_at = last.get("next_at") if state == "retrying" else None
            handlers.append(
                HandlerDetail(
                    handler=name,
                    state=state,
                    token=fields.get(name + "#"),
                    next_retry_at=float(next_at) if next_at is not None else None,
                    attempts=attempts,
                )
            )
        erased = record.erased
        return EventDetail(
            key=key,
            event=record.event,
            received_at=float(score) if score is not None else record.received_at,
            state=_aggregate(fields, states),
            body=record.body.encode() if record.body is not None else None,
            headers=record.headers,
            erased=erased is not None,
            handlers=handlers,
            job_id=record.kept("job_id"),
            post_ids=tuple(record.kept("post_ids") or ()),
            platforms=tuple(record.kept("platforms") or ()),
            profile=record.kept("profile"),
            erased_by=erased.get("by") if erased else None,
            erased_at=erased.get("at") if erased else None,
            source=record.source,
        )

    def erase_payload(self, key: str, who: str) -> bool:
        """Replace the stored body (and the copies dead letters keep) with nothing, keeping
        the outcome rows, the attempt history and the indexes; False when there is no such
        delivery. What the console lists by (platforms, profile, job and post ids) is kept."""
        name = self._keys.delivery(key)
        with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(name)  # type: ignore[no-untyped-call]
                    raw = pipe.get(name)
                    if raw is None:
                        return False
                    erased = self._erased(raw, who)  # type: ignore[arg-type]
                    handlers = list(_handlers(_fields(pipe.hgetall(self._keys.handled(key)))))
                    dead = [self._keys.dlq_entry(entry_id(key, h)) for h in handlers]
                    dead.append(self._keys.dlq_entry(entry_id(key, ROUTING_HANDLER)))
                    entries = pipe.mget(dead) if dead else []
                    pipe.multi()
                    pipe.set(name, erased, keepttl=True)
                    for entry_name, entry in zip(dead, entries, strict=True):
                        if entry is not None:
                            letter = orjson.loads(entry)
                            letter["record"] = erased.decode()
                            pipe.set(entry_name, orjson.dumps(letter), keepttl=True)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    @staticmethod
    def _erased(raw: bytes, who: str) -> bytes:
        record = orjson.loads(raw)
        if record.get("erased"):
            return raw
        parsed = _Record.parse(raw)
        record["body"] = ""
        record["erased"] = {
            "by": who,
            "at": round(time.time(), 3),
            "platforms": list(parsed.kept("platforms")),
            "profile": parsed.kept("profile"),
            "job_id": parsed.kept("job_id"),
            "post_ids": list(parsed.kept("post_ids")),
        }
        return orjson.dumps(record)

    # -- helpers ---------------------------------------------------------------------------
    def _row(self, item: object) -> EventRow:
        assert isinstance(item, list)
        key, score, raw, handled = item
        record = _Record.parse(raw)
        fields = _fields(handled)
        states = _handlers(fields)
        if fields.get("~") == "unroutable":
            states[ROUTING_HANDLER] = "dead"
        return EventRow(
            key=_text(key),
            event=record.event,
            received_at=float(_text(score)),
            state=_aggregate(fields, states),
            platforms=tuple(record.kept("platforms") or ()),
            profile=record.kept("profile"),
            handlers=states,
            erased=record.erased is not None,
        )


def _filters(q: EventQuery) -> Filters:
    return Filters(q.state, q.event, q.platform, q.profile, q.handler, q.since, q.until)
