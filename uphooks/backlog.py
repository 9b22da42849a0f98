"""How far behind the ledger is: open items and the age of the oldest overdue one.

Read by ``uphooks status``, the scheduler's own log and the metrics. Every pair not yet settled
and every delivery not yet routed is in the sorted set ``<prefix>:due`` (workers/ledger.py),
scored by when something must happen to it next; an item whose time has passed is overdue. A
healthy pipeline keeps the oldest overdue age near the scheduler interval (1 s); a growing one
means no worker moves due work, or work comes due faster than the workers take it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from uphooks.keys import Keys


@dataclass(frozen=True)
class Backlog:
    open_items: int
    oldest_overdue_seconds: float  # 0.0: nothing is overdue


def ledger_backlog(client: redis.Redis, keys: Keys, now: float | None = None) -> Backlog:
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.due)
    pipe.zrange(keys.due, 0, 0, withscores=True)
    open_items, oldest = pipe.execute()
    now = time.time() if now is None else now
    return Backlog(int(open_items), max(0.0, now - oldest[0][1]) if oldest else 0.0)
