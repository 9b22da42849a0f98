"""Scheduled work waits in Redis, not in workers, and any worker moves it when it comes due.

Retries, hand-offs to a handler's own queue, replays and recoveries are members of the ledger's
sorted set ``due`` (workers/ledger.py), scored by when they are due, the way Sidekiq keeps its
retry and schedule sets. Every worker's main process runs :meth:`Scheduler.move_due` every
``UPHOOKS_SCHEDULE_INTERVAL_SECONDS``: one Lua call (move.lua) takes what is due, publishes the
messages onto their queues and re-scores each item for its recovery check, atomically, so two
workers never move the same item twice and nothing is lost between the set and the queue. No
worker is special; if all but one die, that one moves everything.

Recovery is the same mechanism: a message lost on its way to a worker (kombu's BRPOP and its
unacked record are two round trips) leaves its item in ``due``, which comes due again after
``UPHOOKS_RECOVER_AFTER_SECONDS`` and is published again. A pass costs what is overdue: it loops
in chunks until nothing due is left, never a fixed number per pass. The age of the oldest
overdue item (:meth:`Scheduler.lag`) is the health figure: ``uphooks status`` shows it and the
metrics export it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import redis

from uphooks.backlog import ledger_backlog
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks.taskmessage import EMBED_JSON, Envelope, lua_template
from workers.background import Periodic, while_worker_runs
from workers.ledger import _script

log = logging.getLogger("uphooks.worker")

#: Items one Lua call looks at: bounds how long Redis is busy with one call (~a few ms).
CHUNK = 500
#: Keys or pairs per message the scheduler publishes.
PER_MESSAGE = 8


@dataclass
class Moved:
    looked_at: int = 0
    routes: int = 0  # deliveries published again for routing (their first message was lost)
    pairs: int = 0  # pair messages' pairs published
    again: int = 0  # of those, published again: their message was lost (or waits long)
    dropped: int = 0  # settled or vanished items removed
    lost_runs: int = 0  # of the pairs, runs lost with their process (a lease that lapsed)
    calls: int = 0

    def __iadd__(self, other: Moved) -> Moved:
        for name in ("looked_at", "routes", "pairs", "again", "dropped", "lost_runs", "calls"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def stall_seconds(settings: Settings) -> float:
    """The gap between two scheduler passes (any worker's) that counts as a stall: Redis paused
    or too slow to answer, or no worker running. After one, lapsed leases get one lease of
    grace before their runs count as lost (move.lua, grace.lua)."""
    return max(3 * settings.schedule_interval_seconds, 1.0)


class Scheduler:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._s = settings
        self._keys = Keys(settings.key_prefix)
        self._move = _script(client, "move.lua")
        self._template = lua_template()

    def move_due(self, now: float | None = None) -> Moved:
        """Publish everything due by ``now``; returns what was done."""
        total = Moved()
        while True:
            at = time.time() if now is None else now
            looked, routes, pairs, again, dropped, lost = self._move(
                keys=[self._keys.due],
                args=[
                    self._keys.prefix,
                    at,
                    CHUNK,
                    self._s.queue,
                    self._s.recover_after_seconds,
                    PER_MESSAGE,
                    Envelope.prefix,
                    EMBED_JSON,
                    uuid.uuid4().hex,
                    self._s.lease_seconds,
                    stall_seconds(self._s),
                    *self._template,
                ],
            )
            total += Moved(
                int(looked), int(routes), int(pairs), int(again), int(dropped), int(lost), 1
            )
            if int(looked) < CHUNK:
                break
        if total.routes or total.again:
            log.warning(
                "published again: %d deliveries never routed and %d pairs never taken "
                "(their message was lost on its way to a worker, or waits in a long queue)",
                total.routes,
                total.again,
            )
        if total.lost_runs:
            log.warning(
                "%d pairs published again: the process running them died (lease lapsed)",
                total.lost_runs,
            )
        return total

    def lag(self, now: float | None = None) -> float:
        """Seconds the oldest overdue item has waited (0.0 when nothing is overdue)."""
        return ledger_backlog(self._r, self._keys, now).oldest_overdue_seconds

    def pass_and_count(self) -> Moved:
        """One :meth:`move_due`, counted in the worker's metrics (the background loop's pass)."""
        from workers import metrics

        moved = self.move_due()
        metrics.scheduler_pass(moved.pairs, moved.routes + moved.again + moved.lost_runs)
        return moved


def install(settings: Settings) -> None:
    """Move due work from the worker's main process once it is ready; stop on shutdown."""
    from uphooks.redis import sync_client

    def start() -> Periodic:
        scheduler = Scheduler(sync_client(settings), settings)
        interval = settings.schedule_interval_seconds
        return Periodic(
            "uphooks-scheduler",
            interval,
            scheduler.pass_and_count,
            log=log,
            what="scheduler pass",
            once_per_outage=True,
        ).start()

    while_worker_runs(start)
