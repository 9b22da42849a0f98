"""Every action, with who did it: a log line (``uphooks.console.audit``) and a list in Redis.

The list ``<prefix>:console:audit`` keeps the newest 1,000 entries for the
Audit page; the log is the record to keep longer (ship it like the other logs).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

log = logging.getLogger("uphooks.console.audit")
KEEP = 1000


@dataclass(frozen=True)
class Entry:
    at: float
    who: str
    role: str
    source: str
    action: str
    outcome: str  # ok | refused | <a short result>
    detail: dict[str, Any]


class Audit:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._key = f"{prefix}:console:audit"

    def record(
        self, who: str, role: str, source: str, action: str, outcome: str, **detail: Any
    ) -> None:
        entry = Entry(time.time(), who, role, source, action, outcome, detail)
        log.info(
            "console %s by %s (%s) from %s: %s",
            action,
            who,
            role,
            source,
            outcome,
            extra={"console_action": action, "who": who, "detail": detail},
        )
        pipe = self._r.pipeline(transaction=False)
        pipe.lpush(self._key, orjson.dumps(entry.__dict__))
        pipe.ltrim(self._key, 0, KEEP - 1)
        pipe.execute()

    def newest(self, count: int = 200) -> list[Entry]:
        raws: list[bytes] = self._r.lrange(self._key, 0, count - 1)  # type: ignore[assignment]
        return [Entry(**orjson.loads(raw)) for raw in raws]
