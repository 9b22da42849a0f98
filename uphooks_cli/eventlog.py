"""What arrived and what each handler did with it: the data behind ``uphooks events``.

Read only; nothing here writes. Three kinds of keys, all written by the pipeline:

- ``<prefix>:events``: sorted set, member = delivery key, score = receipt time (the ingress's
  enqueue script adds it);
- ``<prefix>:delivery:<key>``: the stored delivery, JSON ``{event, received_at, headers, body}``
  (records written before the ingress stopped repeating its key name in it also hold ``key``);
- ``<prefix>:handled:<key>``: the ledger's hash (workers/ledger.py): ``<handler>`` = ``waiting``
  | ``queued`` | ``running`` | ``retrying`` | ``done`` | ``dead``, ``<handler>@`` = JSON
  ``{attempt, at, next_at, error}``, ``~`` = how many handlers the delivery was routed to;
  other fields (token, queue, counters) have a suffix character and are the workers' business.

Retention is ``UPHOOKS_DEDUP_TTL_SECONDS``: records and outcome hashes expire with that TTL, and
the enqueue script trims index members older than it whenever it keeps a new delivery. An index
member whose record already expired (no traffic since) is skipped here.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import redis

from uphooks.keys import Keys

#: Overall status of a delivery, worst first: one dead handler makes the delivery "dead".
STATUSES = ("dead", "retrying", "pending", "done")
_CHUNK = 200


@dataclass(frozen=True)
class HandlerOutcome:
    handler: str
    state: str  # waiting | queued | running | retrying | done | dead
    attempt: int | None = None
    at: float | None = None
    next_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Delivery:
    key: str
    event: str
    received_at: float
    platform: str | None
    profile: str | None
    outcomes: tuple[HandlerOutcome, ...]
    headers: dict[str, str] = field(default_factory=dict)
    routed: str | None = None  # handlers it was routed to ("0": none), "unroutable", None: not yet
    body: Any = None  # the parsed body (a dict), or the raw text when it is not JSON
    source: str = "webhook"  # or "reconciled": read back from Upload-Post's API

    @property
    def status(self) -> str:
        """dead > retrying > pending (not routed yet, queued or running) > done."""
        states = {o.state for o in self.outcomes}
        if "dead" in states or self.routed == "unroutable":
            return "dead"
        if "retrying" in states:
            return "retrying"
        if self.routed is None or states & {"waiting", "queued", "running"}:
            return "pending"
        return "done"

    def summary(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "event": self.event,
            "received_at": self.received_at,
            "platform": self.platform,
            "profile": self.profile,
            "status": self.status,
            "source": self.source,
            "handlers": [asdict(o) for o in self.outcomes],
        }

    def full(self) -> dict[str, Any]:
        return self.summary() | {"headers": self.headers, "body": self.body}


@dataclass(frozen=True)
class EventFilter:
    event: str | None = None
    platform: str | None = None
    profile: str | None = None
    status: str | None = None  # one of STATUSES
    handler: str | None = None  # a glob: only deliveries one such handler touched
    since: float | None = None
    until: float | None = None

    def matches(self, d: Delivery) -> bool:
        if self.event and d.event != self.event:
            return False
        if self.platform and d.platform != self.platform:
            return False
        if self.profile and d.profile != self.profile:
            return False
        if self.handler and not any(
            fnmatch.fnmatchcase(o.handler, self.handler) for o in d.outcomes
        ):
            return False
        return not (self.status and d.status != self.status)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: Ledger fields that are not a handler's state: a suffix on a handler's name, or ``~...``.
_NOT_A_STATE = ("@", "#", "!", "%", "^")


def _outcomes(raw: dict[bytes, bytes]) -> tuple[HandlerOutcome, ...]:
    fields = {_text(k): v for k, v in raw.items()}
    rows = []
    names = (n for n in fields if not n.endswith(_NOT_A_STATE) and not n.startswith("~"))
    for name in sorted(names):
        info: dict[str, Any] = {}
        extra = fields.get(name + "@")
        if extra:
            try:
                info = orjson.loads(extra)
            except orjson.JSONDecodeError:
                info = {}
        rows.append(
            HandlerOutcome(
                handler=name,
                state=_text(fields[name]),
                attempt=info.get("attempt"),
                at=info.get("at"),
                next_at=info.get("next_at"),
                error=info.get("error"),
            )
        )
    return tuple(rows)


def parse(raw_record: bytes, handled: dict[bytes, bytes], key: str | None = None) -> Delivery:
    """One delivery from its stored record and handled hash; ``key`` is the delivery key the
    record is stored under (older records carry it inside as well)."""
    record = orjson.loads(raw_record)
    body_text = record.get("body") or ""
    try:
        body: Any = orjson.loads(body_text)
    except orjson.JSONDecodeError:
        body = body_text
    payload = body if isinstance(body, dict) else {}
    platform = payload.get("platform")
    profile = payload.get("profile_username")
    return Delivery(
        key=str(key or record.get("key")),
        event=str(record.get("event")),
        received_at=float(record.get("received_at") or 0.0),
        platform=platform if isinstance(platform, str) else None,
        profile=profile if isinstance(profile, str) else None,
        outcomes=_outcomes(handled),
        routed=_text(handled[b"~"]) if b"~" in handled else None,
        headers=dict(record.get("headers") or {}),
        body=body,
        source=str(record.get("source") or "webhook"),
    )


class EventLog:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._r = client
        self._keys = keys

    def get(self, key: str) -> Delivery | None:
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self._keys.delivery(key))
        pipe.hgetall(self._keys.handled(key))
        raw, handled = pipe.execute()
        return parse(raw, handled, key) if raw else None

    def iter(self, flt: EventFilter | None = None) -> Iterator[Delivery]:
        """Deliveries newest first, within the filter's time range, that match it."""
        flt = flt or EventFilter()
        high: float | str = flt.until if flt.until is not None else "+inf"
        low: float | str = flt.since if flt.since is not None else "-inf"
        offset = 0
        while True:
            members: list[bytes] = self._r.zrevrangebyscore(  # type: ignore[assignment]
                self._keys.events_index, high, low, start=offset, num=_CHUNK
            )
            if not members:
                return
            offset += len(members)
            keys = [_text(m) for m in members]
            pipe = self._r.pipeline(transaction=False)
            for key in keys:
                pipe.get(self._keys.delivery(key))
                pipe.hgetall(self._keys.handled(key))
            replies = pipe.execute()
            for i in range(len(keys)):
                raw, handled = replies[2 * i], replies[2 * i + 1]
                if not raw:
                    continue  # expired; the next enqueue trims the index
                delivery = parse(raw, handled, keys[i])
                if flt.matches(delivery):
                    yield delivery
            if len(members) < _CHUNK:
                return

    def count(self) -> int:
        return int(self._r.zcard(self._keys.events_index))


# -- time arguments -------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """``15m``/``2h``/``7d`` (that long ago), unix seconds, or ISO 8601 (UTC unless given)."""
    text = text.strip()
    now = time.time() if now is None else now
    found = _DURATION.match(text.lower())
    if found:
        return now - float(found.group(1)) * _UNITS[found.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use a duration back from now (30s, 15m, 2h, 7d), unix "
            "seconds, or ISO 8601 (2024-03-15T14:30:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
