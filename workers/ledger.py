"""The ledger: every (delivery, handler) pair's state in Redis, and the only way to change it.

Messages are wake-ups; this is the source of truth. Per delivery, one hash ``handled:<key>``:

| field | meaning |
|---|---|
| ``<handler>`` | ``waiting`` / ``queued`` / ``running`` / ``retrying`` / ``done`` / ``dead`` |
| ``<handler>#`` | the pair's token ``<generation>.<attempt>``: the run it expects next |
| ``<handler>@`` | details of the last outcome (JSON: attempt, times, error, next retry) |
| ``<handler>^`` | the handler's own queue, when it has one |
| ``<handler>!`` / ``<handler>%`` | runs lost (holder died) / times published again |
| ``<handler>&`` / ``<handler>=`` | an ordered pair's ordering set and its member there |
| ``~`` | the delivery was routed, to this many handlers (0: to none) |
| ``~t`` | taken with another message (consume-side batching) this often and not yet routed |

And one schedule, the sorted set ``due``: every pair not yet settled, and every delivery not yet
routed, scored by when something must happen next (workers/schedule.py moves what is due).

The rules every script keeps:

- **A route message only admits** (admit.lua): the first copy routes the delivery and creates
  its pairs; any later copy finds ``~`` and does nothing. It never runs an existing pair.
- **A pair message runs a pair only with its current token** (claim.lua): a copy that is late
  (the token moved on after a retry), early (the retry is not due) or of a settled pair is a
  no-op. ``done`` and ``dead`` pairs are never run; only a replay (a new generation) runs a
  dead pair again. So there is at most one retry chain per pair.
- **A run holds a lease** while it runs, renewed by workers/leases.py; a pair whose lease lapsed
  while ``running`` lost its run (the process died), is published again by the scheduler and
  counted; too many lost runs make it poison (dead-lettered).
- **Only the run holding the current token settles** (settle.lua); a retry bumps the attempt
  and schedules the pair; a dead letter is written in the same step as the ``dead`` state.
- **An ordered pair goes only at the head of its ordering set** (order.lua, included by the
  scripts): per (handler, ordering key) a sorted set ``order:<handler>:<ordering key>`` by
  created_at; the others are ``waiting`` (not in ``due``); settling the head done or dead
  promotes the next one in the same script.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from enum import Enum
from importlib.resources import files

import redis

from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks.taskmessage import PairRef
from workers.deadletter import ROUTING_HANDLER


def script_source(name: str) -> str:
    """A script's text, with ``--#include <file>`` lines replaced by that file (order.lua)."""
    lines = files("workers").joinpath(name).read_text(encoding="utf-8").splitlines()
    return "\n".join(
        script_source(line.split()[1]) if line.startswith("--#include ") else line for line in lines
    )


def counter_ttl(settings: Settings) -> int:
    """Seconds a message's delivery counter (``Keys.deliveries_of``) is kept."""
    return 2 * settings.visibility_timeout_seconds


def _script(client: redis.Redis, name: str) -> redis.commands.core.Script:
    return client.register_script(script_source(name))


_SAFE_ORDER_KEY = re.compile(r"^[A-Za-z0-9._:@+-]{1,100}$")


def order_set(keys: Keys, handler: str, ordering_key: str) -> str:
    """The sorted set of one handler's pairs with one ordering key (an odd key is hashed)."""
    if not _SAFE_ORDER_KEY.match(ordering_key):
        ordering_key = "h:" + hashlib.sha256(ordering_key.encode()).hexdigest()[:40]
    return keys.order(handler, ordering_key)


def order_member(key: str, created_at: float, not_before: float) -> str:
    """A pair's member in its ordering set: sorts by created_at, then receipt (``not_before``
    is the receipt time plus the reorder window), then key."""
    return f"{created_at:017.6f}|{not_before:017.6f}|{key}"


@dataclass(frozen=True)
class Route:
    """One pair a route message admits: the handler, its own queue, and whether to run it here."""

    handler: str
    queue: str | None
    here: bool
    order_set: str = ""  # "" = not ordered
    order_member: str = ""


class Claim(Enum):
    SKIP = 0  # nothing to do (gone, done, dead, stale, early)
    MINE = 1  # run it, with ``attempt``
    BUSY = 2  # another run holds the lease (``holder``)
    POISON = 3  # claimed, but its runs were lost ``attempt`` times: dead-letter it


@dataclass(frozen=True)
class ClaimResult:
    state: Claim
    attempt: int = 0
    reason: str = ""
    holder: str = ""
    ttl_ms: int = 0
    details: str = ""  # MINE, attempt > 1: the last outcome's details (JSON)


@dataclass(frozen=True)
class Settlement:
    """What one run came to, as settle.lua takes it."""

    ref: PairRef
    kind: str  # done | retry | dead | release
    details: bytes  # JSON for ``<handler>@``
    extra: bytes | str | float = ""  # retry: when due; dead: the dead-letter entry (JSON)


class Ledger:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._s = settings
        self._keys = Keys(settings.key_prefix)
        self._lease_ms = int(settings.lease_seconds * 1000)
        self._admit = _script(client, "admit.lua")
        self._claim = _script(client, "claim.lua")
        self._take_over = _script(client, "take_over.lua")
        self._settle = _script(client, "settle.lua")
        self._renew = _script(client, "renew.lua")
        self._replay = _script(client, "replay.lua")

    @property
    def keys(self) -> Keys:
        return self._keys

    def admit(
        self, deliveries: list[tuple[str, list[Route]]], holder: str, count: str = ""
    ) -> list[list[int]]:
        """Route message: create each delivery's pairs; flags per pair (1: claimed here).

        ``count``: the message's delivery counter, to count its first delivery (which
        workers/intake.lua did not count); "" to leave it.
        """
        if not deliveries:
            return []
        args: list[str | int | float] = [
            self._keys.prefix,
            time.time(),
            self._lease_ms,
            holder,
            self._s.dedup_ttl_seconds,
            len(deliveries),
        ]
        for key, routes in deliveries:
            args += [key, len(routes)]
            for route in routes:
                args += [
                    route.handler,
                    route.queue or "",
                    "1" if route.here else "0",
                    route.order_set,
                    route.order_member,
                ]
        if count:
            args.append(counter_ttl(self._s))
        rows = self._admit(keys=[self._keys.due, count] if count else [self._keys.due], args=args)
        return [[int(flag) for flag in row] for row in rows]

    def claim(self, refs: list[PairRef], holder: str) -> list[ClaimResult]:
        """Pair message: claim the pairs whose token still matches."""
        if not refs:
            return []
        args = self._claim_args(holder)
        for ref in refs:
            args += list(ref)
        return [_claim_result(row) for row in self._claim(keys=[self._keys.due], args=args)]

    def _claim_args(self, holder: str) -> list[str | int | float]:
        """What claim.lua and take_over.lua take before their pairs."""
        return [
            self._keys.prefix,
            time.time(),
            self._lease_ms,
            holder,
            self._s.poison_max_deliveries,
        ]

    def take_over(self, ref: PairRef, dead_holder: str, holder: str) -> ClaimResult:
        """Claim a pair whose lease holder is a process known to be gone."""
        args = [*self._claim_args(holder), *ref, dead_holder]
        return _claim_result(self._take_over(keys=[self._keys.due], args=args))

    def settle(self, settlements: list[Settlement], holder: str) -> list[str]:
        """Record outcomes; per pair "ok", "stale" or "lost" (see settle.lua)."""
        if not settlements:
            return []
        args: list[str | int | float | bytes] = [
            self._keys.prefix,
            time.time(),
            holder,
            self._s.dedup_ttl_seconds,
            self._s.dlq_retention_seconds,
        ]
        for s in settlements:
            args += [*s.ref, s.kind, s.details, s.extra]
        rows = self._settle(keys=[self._keys.due, self._keys.dlq_index], args=args)
        return [_text(row) for row in rows]

    def renew(self, pairs: list[tuple[str, str]], holder: str) -> list[bool]:
        """Extend this holder's leases; False where the lease is not ours any more."""
        if not pairs:
            return []
        args: list[str | int | float] = [self._keys.prefix, time.time(), self._lease_ms, holder]
        for key, handler in pairs:
            args += [key, handler]
        return [bool(flag) for flag in self._renew(keys=[self._keys.due], args=args)]

    def running_pairs(self, keys: list[str]) -> list[PairRef]:
        """The pairs of these deliveries in state ``running``, with their tokens."""
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self._keys.handled(key))
        refs: list[PairRef] = []
        for key, raw in zip(keys, pipe.execute(), strict=True):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            for name, state in fields.items():
                if state == "running" and f"{name}#" in fields:
                    refs.append((key, name, fields[f"{name}#"]))
        return refs

    def replay(self, key: str, handler: str, record: str) -> str:
        """A dead letter runs again: a new generation of its pair, due now. Returns
        "replayed", "done" (it was done meanwhile) or "busy" (already under way)."""
        args: list[str | int | float] = [
            self._keys.prefix,
            time.time(),
            self._s.dedup_ttl_seconds,
            key,
            handler,
            record,
            ROUTING_HANDLER,
        ]
        return _text(self._replay(keys=[self._keys.due, self._keys.dlq_index], args=args))


def _claim_result(row: list[object]) -> ClaimResult:
    code = Claim(int(row[0]))  # type: ignore[call-overload]
    if code is Claim.BUSY:
        return ClaimResult(code, holder=_text(row[1]), ttl_ms=int(row[2]))  # type: ignore[call-overload]
    if code is Claim.SKIP:
        return ClaimResult(code, reason=_text(row[1]))
    details = _text(row[2]) if len(row) > 2 else ""
    return ClaimResult(code, attempt=int(row[1]), details=details)  # type: ignore[call-overload]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
