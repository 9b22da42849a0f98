"""The console's indexes on the worker side: the one sync outside a ledger script, and the pruner.

The indexes themselves are written by the scripts where the data is born (receiver/enqueue.lua at
receipt, workers/index.lua included by every ledger script that changes a pair's state; docs/
design.md section 11). Entries are scored by receipt time, so an entry past the retention
(``UPHOOKS_DEDUP_TTL_SECONDS``) never shows (readers bound the score), and the pruner here takes
it out: every worker's main process runs a pass every :data:`PRUNE_INTERVAL` seconds, the first to
take the lock for that interval; a pass goes on in calls of :data:`PRUNE_BUDGET` entries until
nothing past the cut is left, so Redis is never blocked for long and a backlog (a rare value's
index nobody wrote for a week, a burst that expired at once) is cleared in one pass.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import redis

from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.background import Periodic, while_worker_runs
from workers.ledger import script_source

log = logging.getLogger("uphooks.worker")

#: ``EVAL`` it with no keys and ARGV key prefix, delivery key (workers/index_sync.lua).
INDEX_SYNC = script_source("index_sync.lua")
PRUNE_INTERVAL = 30.0
#: Index entries removed per call at most (a few milliseconds of Redis time).
PRUNE_BUDGET = 5000


@dataclass(frozen=True)
class Pruned:
    removed: int  # index entries taken out
    indexes: int  # indexes looked at
    calls: int


class IndexPruner:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._keys = Keys(settings.key_prefix)
        self._retention = settings.dedup_ttl_seconds
        self._script = client.register_script(script_source("index_prune.lua"))
        self._lock = f"{self._keys.index_prefix}prune-lock"

    def prune(self, now: float | None = None, budget: int = PRUNE_BUDGET) -> Pruned:
        """One pass: every entry received before ``now`` minus the retention goes."""
        cut = (time.time() if now is None else now) - self._retention
        removed = indexes = calls = 0
        while True:
            keys = [self._keys.index_registry, self._keys.events_index]
            n, looked, more = self._script(keys=keys, args=[repr(cut), budget])
            removed, indexes, calls = removed + int(n), indexes + int(looked), calls + 1
            if not int(more):
                return Pruned(removed, indexes, calls)

    def run_once(self) -> Pruned | None:
        """A pass if this process takes the interval's lock (one pass per interval overall)."""
        token = uuid.uuid4().hex
        if not self._r.set(self._lock, token, nx=True, px=int(PRUNE_INTERVAL * 1000)):
            return None
        return self.prune()

    def run_and_say(self) -> Pruned | None:
        """:meth:`run_once`, logging what it removed (the background loop's pass)."""
        done = self.run_once()
        if done is not None and done.removed:
            log.info(
                "console indexes: %d entries past the retention pruned from %d indexes",
                done.removed,
                done.indexes,
            )
        return done


class PrunerThread(Periodic):
    def __init__(self, pruner: IndexPruner, interval: float = PRUNE_INTERVAL) -> None:
        what = "console index pruning"
        super().__init__("uphooks-ix-prune", interval, pruner.run_and_say, log=log, what=what)


def install(settings: Settings) -> None:
    """Run the pruner beside the worker, in its main process."""
    from uphooks.redis import sync_client

    while_worker_runs(
        lambda: PrunerThread(IndexPruner(sync_client(settings, timeout=10), settings)).start()
    )
