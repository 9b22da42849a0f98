"""How much refused work each source may cost: a refusal budget per source, in this process.

A forged delivery with well-formed, fresh signature headers costs two HMACs per secret over up
to the body limit before it can be refused. Each source (an address, an IPv6 /64, the client
behind a trusted proxy) has a budget of refusals: ``refusal_burst``, refilled at
``refusal_rate_per_second``. Only refusals spend it (401/403/413/415 and the 503 for a
signature no secret of ours matches); a delivery that passes spends nothing, so a source that
sends only valid deliveries is never throttled.

A source past its budget is *throttled*, not shut out: its requests are still checked, but a
body larger than ``throttled_body_bytes`` is answered 429 before it is read, and a refusal is
answered 429 (with Retry-After) instead of its usual code. A valid delivery from a throttled
source (the sender's address shared with an attacker, or another Upload-Post account pointed at
this URL) is small, so it is still verified and accepted. What a throttled source can cost per
request is then about what a valid delivery costs (``make bench`` measures both).

In memory, per process, on purpose: counting refusals in Redis would give forged traffic a round
trip to the store that holds the deliveries, the one thing it must not reach. With several
ingress processes each keeps its own budgets, so a source gets up to N times the budget in all;
each process still bounds what it spends itself, which is what the budget is for.
"""

from __future__ import annotations

import math
import time

from receiver.allowed_networks import Address
from receiver.connections import source_key

# Budgets kept at most; past it, the fullest (idle longest) are forgotten first.
MAX_SOURCES = 65_536


class RefusalBudget:
    """Token buckets of refusals, one per source key."""

    def __init__(self, burst: int, per_second: float, max_sources: int = MAX_SOURCES) -> None:
        self.burst = float(burst)
        self.per_second = per_second
        self.max_sources = max_sources
        # key -> (tokens left, when they were counted). Insertion order = least recently spent.
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, now: float) -> float:
        left, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, left + (now - at) * self.per_second)

    def throttled(self, address: Address | None, now: float | None = None) -> bool:
        """Has this source spent its budget (less than one refusal left)?"""
        key = source_key(address)
        if key not in self._buckets:
            return False
        return self._tokens(key, time.monotonic() if now is None else now) < 1.0

    def retry_after(self, address: Address | None, now: float | None = None) -> int:
        """Whole seconds until this source has one refusal to spend again (at least 1)."""
        now = time.monotonic() if now is None else now
        missing = 1.0 - self._tokens(source_key(address), now)
        return max(1, math.ceil(missing / self.per_second))

    def spend(self, address: Address | None, now: float | None = None) -> None:
        """Count one refusal against this source."""
        now = time.monotonic() if now is None else now
        key = source_key(address)
        left = self._tokens(key, now) - 1.0
        self._buckets.pop(key, None)  # re-inserted last: the dict stays in spending order
        self._buckets[key] = (max(left, -self.burst), now)
        if len(self._buckets) > self.max_sources:
            self._forget(now)

    def _forget(self, now: float) -> None:
        full = [k for k in self._buckets if self._tokens(k, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > self.max_sources:  # all busy: drop the least recent
            del self._buckets[next(iter(self._buckets))]
