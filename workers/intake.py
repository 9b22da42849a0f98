"""What one message brings in: its delivery counted, further route messages taken, records read.

One Lua call (intake.lua) does all three, so a message costs one round trip before routing
instead of one per step.

**Consume-side batching.** Messages are only wake-ups and every delivery waits in the ledger's
schedule (``due``) until a worker routes it (docs/design.md, sections 3 and 7). So a worker that
runs a route message may also take the route messages queued behind it and route and run their
deliveries in the same call: one admit, one settle and one Celery acknowledgement for all of
them, where each message alone would pay its own. The script takes only route messages of ours
and stops at anything else (a foreign task's message stays for Celery). A taken message is in
no unacknowledged set; its deliveries stay in ``due`` re-scored to come due within a lease time,
so if this process dies before routing them, the scheduler publishes them again, as for any
lost route message. A redelivered message (it may be poison) takes nothing and runs alone.

How many to take (:class:`BatchSize`): taking serialises in one pool process what other pool
processes could run side by side, which pays only while handlers are fast. So each process
keeps an average of the handler time per delivery and takes at most what fits in
``BUDGET`` seconds, up to ``UPHOOKS_WORKER_BATCH_MAX`` deliveries; a process that has not run a
handler yet takes nothing, and handlers that take ~50 ms or more are never batched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks.taskmessage import PROCESS_TASK
from workers.ledger import _script, counter_ttl

log = logging.getLogger("uphooks.worker")

#: Handler seconds one batch of taken messages may add to the message's own.
BUDGET = 0.05
#: Weight of the latest delivery in the running average of handler time.
_ALPHA = 0.2


@dataclass
class Intake:
    """The message's keys followed by the taken ones, their records, and the message's count."""

    seen: int  # how often the broker handed this message to a worker (1: the first time)
    keys: list[str]
    records: dict[str, bytes]  # the records found (a key without one: its delivery expired)
    taken_messages: int = 0
    taken_keys: int = 0


class BatchSize:
    """How many deliveries of further messages this process takes with the next message."""

    def __init__(self, most: int) -> None:
        self._most = most
        self._average: float | None = None

    def observe(self, seconds: float, deliveries: int) -> None:
        """A message's handlers ran ``seconds`` in all for ``deliveries`` deliveries."""
        if deliveries <= 0:
            return
        per = seconds / deliveries
        last = self._average
        self._average = per if last is None else last * (1 - _ALPHA) + per * _ALPHA

    def further(self, own: int, room: int | None = None) -> int:
        """Deliveries to take besides the message's own ``own`` (0: take nothing), no more
        than ``room`` in all when given (runs the process can start off its slot now)."""
        if self._average is None or self._most <= own:
            return 0
        fits = int(BUDGET / max(self._average, 1e-5))
        if room is not None:
            fits = min(fits, room - own)
        return max(0, min(self._most - own, fits))


class Intaker:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._s = settings
        self._keys = Keys(settings.key_prefix)
        self._client = client
        self._script = _script(client, "intake.lua")
        self.size = BatchSize(settings.worker_batch_max)

    def take(
        self,
        task_id: str,
        keys: list[str],
        queue: str,
        route: bool,
        redelivered: bool = True,
        room: int | None = None,
    ) -> Intake:
        """Count the message, take further route messages from ``queue`` if a ``route``
        message (no more than ``room`` deliveries in all), and read the records.

        A route message's first delivery (not ``redelivered``) is not counted here but by the
        admit call (:meth:`Ledger.admit`'s ``count``), so nothing here waits for a write; its
        redelivery counts as at least the second, as the first may have died while routing.
        """
        further = self.size.further(len(keys), room) if route else 0
        defer = route and not redelivered
        if defer and not further:
            # Nothing to count and nothing to take: the script would only read the records,
            # so read them with a plain MGET (no script to pack, look up and run).
            names = [self._keys.delivery(key) for key in keys]
            raws: list[bytes | None] = []
            if names:
                raws = self._client.mget(names)  # type: ignore[assignment]
            return self._intake(task_id, keys, 1, [], raws, 0)
        seen, taken, raws, messages = self._script(
            keys=[queue, self._keys.due],
            args=[
                self._keys.prefix,
                "" if defer else self._keys.deliveries_of(task_id),
                counter_ttl(self._s),
                time.time(),
                self._s.lease_seconds,
                further,  # at most one message per delivery
                len(keys) + further,
                PROCESS_TASK,
                self._s.poison_max_deliveries,
                self._s.dedup_ttl_seconds,
                2 if route and redelivered else 1,
                len(keys),
                *keys,
            ],
        )
        return self._intake(task_id, keys, int(seen), taken, raws, int(messages))

    @staticmethod
    def _intake(
        task_id: str,
        keys: list[str],
        seen: int,
        taken: list[bytes | str],
        raws: list[bytes | None],
        messages: int,
    ) -> Intake:
        every = keys + [k.decode() if isinstance(k, bytes) else str(k) for k in taken]
        found = {k: raw for k, raw in zip(every, raws, strict=True) if raw is not None}
        every = list(dict.fromkeys(every))  # a key named twice is routed once (copies)
        for key in every:
            if key not in found:
                log.error(
                    "the stored delivery is gone (older than UPHOOKS_DEDUP_TTL_SECONDS?); "
                    "nothing to process",
                    extra={"delivery_key": key},
                )
        if messages:
            log.info(
                "message %s: took %d further route message(s) with %d delivery(ies)",
                task_id,
                messages,
                len(taken),
            )
        return Intake(seen, every, found, messages, len(taken))
