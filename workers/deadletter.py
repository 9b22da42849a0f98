"""Dead letters: (delivery, handler) pairs that will not be retried any more, kept for a human.

An entry holds the delivery record (so it outlives the delivery's own TTL), the handler, the
number of attempts, the last error with its traceback, and the times. The settle step writes an
entry in the same atomic step as the pair's ``dead`` state (workers/settle.lua). Replay
(workers/ledger.py, ``Ledger.replay``) starts a new generation of that one pair, so handlers that
already succeeded are not run again.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis

from uphooks.keys import Keys

#: The handler name of a dead letter whose delivery could not be routed at all; replaying one
#: routes the delivery again and runs every handler it has not been handled by yet.
ROUTING_HANDLER = "uphooks.routing"


@dataclass(frozen=True)
class DeadLetter:
    key: str
    handler: str
    event: str
    attempts: int
    error: str
    traceback: str
    first_received_at: float
    dead_at: float
    record: str  # the stored delivery, JSON

    @property
    def entry_id(self) -> str:
        return entry_id(self.key, self.handler)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("record")
        data.pop("traceback")
        data["id"] = self.entry_id
        return data


def entry_id(key: str, handler: str) -> str:
    return f"{key}|{handler}"


@dataclass(frozen=True)
class Filter:
    event: str | None = None
    handler: str | None = None  # a glob
    platform: str | None = None
    since: float | None = None

    def matches(self, dl: DeadLetter) -> bool:
        if self.event and dl.event != self.event:
            return False
        if self.handler and not fnmatch.fnmatchcase(dl.handler, self.handler):
            return False
        if self.since and dl.dead_at < self.since:
            return False
        if self.platform:
            body = orjson.loads(orjson.loads(dl.record)["body"])
            return isinstance(body, dict) and body.get("platform") == self.platform
        return True


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys, retention_s: int) -> None:
        self._r = client
        self._keys = keys
        self._retention_s = retention_s

    def add(self, dl: DeadLetter) -> None:
        eid = dl.entry_id
        now = time.time()
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._keys.dlq_entry(eid), orjson.dumps(asdict(dl)), ex=self._retention_s)
        pipe.zadd(self._keys.dlq_index, {eid: dl.dead_at})
        pipe.zremrangebyscore(self._keys.dlq_index, "-inf", f"({now - self._retention_s}")
        pipe.execute()

    def get(self, eid: str) -> DeadLetter | None:
        raw = self._r.get(self._keys.dlq_entry(eid))
        return DeadLetter(**orjson.loads(raw)) if raw else None

    def iter(self, flt: Filter | None = None) -> Iterator[DeadLetter]:
        """Entries, oldest first; stale index members (expired entries) are dropped."""
        flt = flt or Filter()
        members: list[bytes] = self._r.zrange(self._keys.dlq_index, 0, -1)  # type: ignore[assignment]
        ids = [m.decode() for m in members]
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            raws = self._r.mget([self._keys.dlq_entry(i) for i in chunk])
            for eid, raw in zip(chunk, raws, strict=True):
                if raw is None:
                    self._r.zrem(self._keys.dlq_index, eid)
                    continue
                dl = DeadLetter(**orjson.loads(raw))
                if flt.matches(dl):
                    yield dl

    def count(self) -> int:
        return int(self._r.zcard(self._keys.dlq_index))

    def remove(self, eid: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._keys.dlq_entry(eid))
        pipe.zrem(self._keys.dlq_index, eid)
        pipe.execute()

    def purge(self, flt: Filter | None = None) -> int:
        n = 0
        for dl in list(self.iter(flt)):
            self.remove(dl.entry_id)
            n += 1
        return n
