"""How a filter becomes a walk over the console's indexes (console/page.lua), never a SCAN.

Each filter names one index (a state, an event name, a platform, a profile, a handler's pairs in
one state); the page script counts every candidate in the time range (ZCOUNT), walks the
smallest newest first and checks the others by ZSCORE, at most :data:`SCAN_BOUND` candidates per
call. What has no index is checked per candidate: "done" (in no other state index) and a
handler's pair in any state or done (its field in the ledger hash). The cursor is the last
(score, key) walked, so the next page starts right after it whatever arrived meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from importlib.resources import files

import redis

from uphooks.indexes import term_value
from uphooks.keys import Keys

#: Candidates one call looks at, at most (about 15 ms of Redis time at worst, bench/console.py);
#: a page that needs more comes back short, with a cursor and ``scanned``, and the next call
#: goes on. Redis runs nothing else meanwhile, so this bounds what a console adds to the
#: ingress's latency too.
SCAN_BOUND = 5_000
STATES = ("pending", "running", "retrying", "done", "dead")
#: The pair states with an index per handler (workers/index.lua).
PAIR_INDEXED = ("retrying", "dead")

_LUA = files("console").joinpath("page.lua").read_text(encoding="utf-8")


class BadCursor(ValueError):
    """A cursor that no page handed out."""


def encode_cursor(score: str, key: str) -> str:
    return base64.urlsafe_b64encode(f"{score}\n{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, key = text.split("\n", 1)
        float(score)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise BadCursor(f"not a cursor: {cursor!r}") from exc
    return score, key


@dataclass(frozen=True)
class Filters:
    """What a query filters on (handler: an exact name); console/shapes.py's ``EventQuery``
    is one, with where its page starts."""

    state: str | None = None
    event: str | None = None
    platform: str | None = None
    profile: str | None = None
    handler: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class Plan:
    """What page.lua checks: a delivery is in one index of every group, in none of ``absent``,
    and (when ``handler``) routed to that handler, its pair in ``pair_state`` ("" for any)."""

    groups: list[list[str]]
    absent: list[str]
    handler: str = ""
    pair_state: str = ""

    @property
    def exact_count(self) -> bool:
        """Whether the walked index's count alone is the answer (one group, nothing else)."""
        return len(self.groups) == 1 and not self.absent and not self.handler


def plan(keys: Keys, f: Filters) -> Plan:
    if f.state is not None and f.state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {f.state!r}")
    out: list[list[str]] = []
    absent: list[str] = []
    handler = pair_state = ""
    if f.handler and f.state in PAIR_INDEXED:
        out.append([keys.index_pair(term_value(f.handler), f.state)])
    elif f.handler:
        # Only retrying and dead pairs have an index of their own (workers/index.lua): the
        # ledger hash says; a pair pending or running makes its delivery not done.
        handler, pair_state = f.handler, f.state or ""
        if f.state in ("pending", "running"):
            out.append([keys.index_state(s) for s in STATES if s != "done"])
    elif f.state == "done":
        absent = [keys.index_state(s) for s in STATES if s != "done"]
    elif f.state:
        out.append([keys.index_state(f.state)])
    for kind, value in (("ev", f.event), ("pf", f.platform), ("pr", f.profile)):
        if value:
            out.append([keys.index(kind, term_value(value))])
    return Plan(out or [[keys.events_index]], absent, handler, pair_state)


@dataclass(frozen=True)
class Walk:
    found: list[object]  # rows, keys or [count], as page.lua returns them
    scanned: int
    next_cursor: str | None
    candidates: int  # entries in range of the index walked


class Pager:
    def __init__(self, client: redis.Redis, keys: Keys, retention_s: float) -> None:
        self._keys = keys
        self._retention = retention_s
        self._script = client.register_script(_LUA)

    @property
    def retention_s(self) -> float:
        return self._retention

    def floor(self, since: float | None) -> float:
        """The lowest receipt time that can still show: nothing older than the retention."""
        oldest = time.time() - self._retention
        return oldest if since is None else max(since, oldest)

    def walk(
        self,
        f: Filters,
        cursor: str | None,
        limit: int,
        mode: str = "rows",
        bound: int = SCAN_BOUND,
    ) -> Walk:
        score, key = decode_cursor(cursor) if cursor else ("", "")
        args: list[str | int | float] = [
            self._keys.prefix,
            "+inf" if f.until is None else repr(f.until),
            repr(self.floor(f.since)),
            score,
            key,
            max(1, limit),
            bound,
            mode,
        ]
        chosen = plan(self._keys, f)
        args.append(len(chosen.groups))
        for names in chosen.groups:
            args += [len(names), *names]
        args += [len(chosen.absent), *chosen.absent, chosen.handler, chosen.pair_state]
        found, scanned, next_score, next_key, total = self._script(args=args)
        nxt = None
        if next_score is not None:
            nxt = encode_cursor(text(next_score), text(next_key))
        return Walk(list(found), int(scanned), nxt, int(total))


def text(value: object) -> str:
    """A Redis reply's bytes (or number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
