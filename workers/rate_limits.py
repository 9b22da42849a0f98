"""Rate limits shared by all workers: whether a claimed pair may run now, or when.

A handler declared with ``rate=`` (handlers/rates.py) has one or more buckets in Redis
(``rate:bucket:<name>``), shared by every worker and every process. Before its claimed pairs
run, one call of rate.lua asks each pair's buckets for a token. A pair over the limit gets a
**slot**, the time its tokens will be there, and is given back to the ledger due at that slot:
``release`` with a due time (settle.lua), which keeps its token and attempt. So the waiting
happens in the schedule, in Redis: no pool slot is held and no attempt is counted, and when the
pair comes back it runs on the slot it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from handlers.rates import Rate
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.ledger import _script

#: A slot is kept this long after its time, for a pair that comes back late (ms).
SLOT_KEPT_MS = 600_000


class RateLimits:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._keys = Keys(settings.key_prefix)
        self._rate = _script(client, "rate.lua")
        self._kept_ms = max(SLOT_KEPT_MS, int(settings.recover_after_seconds * 2000))

    def waits(self, pairs: Sequence[tuple[str, str, Mapping[str, Rate]]]) -> list[float]:
        """Per (delivery key, handler, buckets): 0.0 to run now, else seconds to wait."""
        if not pairs:
            return []
        args: list[str | int | float] = [self._keys.prefix, self._kept_ms]
        for key, handler, buckets in pairs:
            args += [f"{key}|{handler}", len(buckets)]
            for name, rate in buckets.items():
                args += [name, rate.interval * 1000, rate.burst]
        waits = self._rate(keys=[self._keys.due], args=args)
        return [int(ms) / 1000 for ms in waits]
