"""At most one effect per (delivery, handler): done markers and leases.

- A *done marker* (field ``<handler> = done`` in ``handled:<key>``) is written only after the
  handler returned. A pair with a marker is never run again.
- A *lease* (``lease:<key>:<handler>``, ``SET NX PX``) is held while the handler runs, so two
  workers given the same event at once (a redelivery racing the original) never run the same pair
  concurrently. It expires by itself after the hard time limit plus a margin, so a killed holder
  cannot block the pair for ever; a holder on this host whose process is gone is taken over at once.

Claiming every pair of a batch and finishing them are one Lua call each: two round trips per
batch, whatever its size.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from enum import Enum

import redis

from uphooks.keys import Keys

_CLAIM = """
local out = {}
for i = 1, #ARGV - 2 do
  local h, hk, lk = ARGV[i + 2], KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('HGET', hk, h) == 'done' then
    out[i] = {0, '', 0}
  elseif redis.call('SET', lk, ARGV[2], 'NX', 'PX', ARGV[1]) then
    out[i] = {1, '', 0}
  else
    out[i] = {2, redis.call('GET', lk) or '', redis.call('PTTL', lk)}
  end
end
return out
"""

_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# Outcomes never overwrite a done marker; the lease is dropped only by its holder.
_FINISH = """
local ttl = tonumber(ARGV[2])
for i = 1, (#ARGV - 2) / 3 do
  local a = 3 + (i - 1) * 3
  local h, hk, lk = ARGV[a], KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('HGET', hk, h) ~= 'done' then
    redis.call('HSET', hk, h, ARGV[a + 1], h .. '@', ARGV[a + 2])
  end
  redis.call('EXPIRE', hk, ttl)
  if redis.call('GET', lk) == ARGV[1] then
    redis.call('DEL', lk)
  end
end
return 1
"""


class Claim(Enum):
    DONE = 0
    MINE = 1
    BUSY = 2


@dataclass(frozen=True)
class ClaimResult:
    state: Claim
    holder: str = ""
    ttl_ms: int = 0


@dataclass(frozen=True)
class Outcome:
    key: str
    handler: str
    state: str  # "done", "retrying", "dead"
    info: bytes  # JSON: attempt, times, last error


_HOST = socket.gethostname()


def holder_token(task_id: str) -> str:
    """Who holds a lease: host and pid (to spot a dead holder here), and a unique token."""
    return f"{_HOST}|{os.getpid()}|{task_id}|{uuid.uuid4().hex[:12]}"


def holder_is_dead_here(holder: str) -> bool:
    """True when the holder ran on this host and its process is gone (e.g. a SIGKILLed child)."""
    host, _, rest = holder.partition("|")
    pid_text = rest.partition("|")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Markers:
    def __init__(self, client: redis.Redis, keys: Keys, lease_ttl_ms: int, ttl_s: int) -> None:
        self._keys = keys
        self._lease_ttl_ms = lease_ttl_ms
        self._ttl_s = ttl_s
        self._claim = client.register_script(_CLAIM)
        self._take_over = client.register_script(_TAKE_OVER)
        self._finish = client.register_script(_FINISH)

    def claim(self, pairs: list[tuple[str, str]], holder: str) -> list[ClaimResult]:
        if not pairs:
            return []
        keys: list[str] = []
        for key, handler in pairs:
            keys += [self._keys.handled(key), self._keys.lease(key, handler)]
        rows = self._claim(keys=keys, args=[self._lease_ttl_ms, holder, *(h for _, h in pairs)])
        results = []
        for state, who, ttl in rows:
            results.append(ClaimResult(Claim(int(state)), _text(who), int(ttl)))
        return results

    def take_over(self, key: str, handler: str, dead_holder: str, holder: str) -> bool:
        lease = self._keys.lease(key, handler)
        return bool(self._take_over(keys=[lease], args=[dead_holder, holder, self._lease_ttl_ms]))

    def finish(self, outcomes: list[Outcome], holder: str) -> None:
        if not outcomes:
            return
        keys: list[str] = []
        args: list[str | bytes | int] = [holder, self._ttl_s]
        for o in outcomes:
            keys += [self._keys.handled(o.key), self._keys.lease(o.key, o.handler)]
            args += [o.handler, o.state, o.info]
        self._finish(keys=keys, args=args)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
