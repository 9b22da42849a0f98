"""Bulk replay of dead letters: a job in Redis with its progress and a cancel flag, run by a
console process in the background, in bounded chunks.

``<prefix>:console:job:<id>`` (a hash) holds the filters, the estimate, the counts so far, the
state (queued, running, done, cancelled, failed) and ``cancel``; ``<prefix>:console:jobs``
lists the newest jobs, ``<prefix>:console:jobs:active`` the unfinished ones. Any console
process takes an unfinished job (a queued one, or a running one whose runner's lock ran out:
its process died) under a lock renewed per chunk, so two never run one job. Between chunks it
checks ``cancel`` and pauses UPHOOKS_CONSOLE_BULK_PAUSE_SECONDS, so a large replay never
floods the workers' queue at once. Taking a job over again is safe: a replayed pair is no
longer dead, so a second pass over the filter skips it (``Ledger.replay`` is one script).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis

from console.store import ConsoleStore, EventQuery
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.background import Periodic
from workers.deadletter import DeadLetters, entry_id
from workers.ledger import Ledger

log = logging.getLogger("uphooks.console.bulk")
KEEP_JOBS = 50
LOCK_SECONDS = 30
FINAL = ("done", "cancelled", "failed")
_NOT_NAMES = tuple(c.encode() for c in "@#!%^&=")  # suffixes of a pair's other fields


@dataclass(frozen=True)
class Job:
    id: str
    who: str
    filters: str  # the query string, to show and link back
    query: dict[str, Any]
    state: str
    total: int
    processed: int
    replayed: int
    skipped: int
    cancel: bool
    created_at: float
    finished_at: float | None
    error: str

    @property
    def percent(self) -> int:
        if self.state == "done":
            return 100
        return min(100, int(100 * self.processed / self.total)) if self.total else 0


class Jobs:
    def __init__(self, client: redis.Redis, settings: Settings, store: ConsoleStore) -> None:
        self._r = client
        self._s = settings
        self._store = store
        self._prefix = f"{settings.key_prefix}:console"
        self._index = f"{self._prefix}:jobs"
        self._active = f"{self._prefix}:jobs:active"  # queued or running: what runners look at
        keys = Keys(settings.key_prefix)
        self._dead = DeadLetters(client, keys, settings.dlq_retention_seconds)
        self._keys = keys
        self._ledger: Ledger | None = None  # scripts loaded on first use

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def start(self, who: str, filters: str, query: EventQuery, total: int) -> Job:
        job_id = secrets.token_hex(8)
        fields = {
            "id": job_id,
            "who": who,
            "filters": filters,
            "query": orjson.dumps(asdict(query) | {"cursor": None}),
            "state": "queued",
            "total": total,
            "processed": 0,
            "replayed": 0,
            "skipped": 0,
            "cancel": 0,
            "created_at": time.time(),
            "error": "",
        }
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self._key(job_id), mapping=fields)  # type: ignore[arg-type]
        pipe.expire(self._key(job_id), 7 * 86400)
        pipe.lpush(self._index, job_id)
        pipe.ltrim(self._index, 0, KEEP_JOBS - 1)
        pipe.sadd(self._active, job_id)
        pipe.execute()
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        raw: dict[bytes, bytes] = self._r.hgetall(self._key(job_id))  # type: ignore[assignment]
        if not raw:
            return None
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return Job(
            id=f["id"],
            who=f["who"],
            filters=f["filters"],
            query=orjson.loads(f["query"]),
            state=f["state"],
            total=int(f["total"]),
            processed=int(f["processed"]),
            replayed=int(f["replayed"]),
            skipped=int(f["skipped"]),
            cancel=f["cancel"] == "1",
            created_at=float(f["created_at"]),
            finished_at=float(f["finished_at"]) if f.get("finished_at") else None,
            error=f.get("error", ""),
        )

    def newest(self, count: int = 10) -> list[Job]:
        ids: list[bytes] = self._r.lrange(self._index, 0, count - 1)  # type: ignore[assignment]
        return [job for job in (self.get(i.decode()) for i in ids) if job is not None]

    def cancel(self, job_id: str) -> bool:
        job = self.get(job_id)
        if job is None or job.state in FINAL:
            return False
        self._r.hset(self._key(job_id), "cancel", 1)
        return True

    # -- the runner ---------------------------------------------------------------------------
    def _take(self, holder: str) -> Job | None:
        ids: set[bytes] = self._r.smembers(self._active)  # type: ignore[assignment]
        for raw in ids:
            job = self.get(raw.decode())
            if job is None or job.state in FINAL:
                self._r.srem(self._active, raw)
                continue
            if self._r.set(f"{self._key(job.id)}:lock", holder, nx=True, ex=LOCK_SECONDS):
                return job
        return None

    def run_once(self, holder: str) -> bool:
        """Take one job that needs a runner and run it to its end; False when there was none."""
        job = self._take(holder)
        if job is None:
            return False
        key = self._key(job.id)
        self._r.hset(key, "state", "running")
        try:
            state = self._run(job, holder)
        except Exception as exc:  # the job says what failed; the runner goes on
            log.exception("bulk replay %s failed", job.id)
            state = "failed"
            self._r.hset(key, "error", f"{type(exc).__name__}: {exc}"[:500])
        self._r.hset(key, mapping={"state": state, "finished_at": time.time()})
        self._r.srem(self._active, job.id)
        self._r.delete(f"{key}:lock")
        log.info("bulk replay %s by %s: %s", job.id, job.who, state)
        return True

    def _run(self, job: Job, holder: str) -> str:
        key = self._key(job.id)
        query = EventQuery(**job.query)
        for chunk in self._store.iter_keys(query, batch=self._s.console_bulk_chunk):
            if self._r.hget(key, "cancel") == b"1":
                return "cancelled"
            replayed, skipped = self.replay_items(chunk, query.handler)
            pipe = self._r.pipeline(transaction=False)
            pipe.hincrby(key, "processed", len(chunk))
            pipe.hincrby(key, "replayed", replayed)
            pipe.hincrby(key, "skipped", skipped)
            pipe.set(f"{key}:lock", holder, ex=LOCK_SECONDS)
            pipe.execute()
            time.sleep(self._s.console_bulk_pause_seconds)
        return "cancelled" if self._r.hget(key, "cancel") == b"1" else "done"

    def replay_items(self, items: list[str], handler: str | None = None) -> tuple[int, int]:
        """Replay dead pairs: entry ids (``key|handler``) or delivery keys (each dead handler
        of it). Returns (replayed, skipped: done or under way meanwhile, or nothing dead)."""
        if self._ledger is None:
            self._ledger = Ledger(self._r, self._s)
        replayed = skipped = 0
        for item in items:
            pairs = self.pairs_of(item, handler)
            if not pairs:
                skipped += 1
            for dkey, name in pairs:
                result = self.replay_pair(dkey, name)
                replayed += result == "replayed"
                skipped += result != "replayed"
        return replayed, skipped

    def pairs_of(self, item: str, handler: str | None = None) -> list[tuple[str, str]]:
        """The dead pairs an item of ``ConsoleStore.iter_keys`` names: an entry id
        (``key|handler``) or a delivery key (each of its dead handlers)."""
        if "|" in item:
            key, _, handler = item.partition("|")
            pairs = [(key, handler)]
        else:
            pairs = self.dead_pairs(item)
        if handler:  # the filters name one handler: only its pairs
            pairs = [p for p in pairs if p[1] == handler]
        return pairs

    def dead_pairs(self, key: str) -> list[tuple[str, str]]:
        states: dict[bytes, bytes] = self._r.hgetall(self._keys.handled(key))  # type: ignore[assignment]
        # Only handler names: not the ledger's and the indexes' own fields (``~...``, suffixes).
        pairs = [
            (key, name.decode())
            for name, state in states.items()
            if state == b"dead" and not name.startswith(b"~") and name[-1:] not in _NOT_NAMES
        ]
        routing = entry_id(key, "uphooks.routing")
        if self._r.exists(self._keys.dlq_entry(routing)):
            pairs.append((key, "uphooks.routing"))
        return pairs

    def replay_pair(self, key: str, handler: str) -> str:
        """``Ledger.replay`` with the dead letter's record (or the stored delivery)."""
        if self._ledger is None:
            self._ledger = Ledger(self._r, self._s)
        dead = self._dead.get(entry_id(key, handler))
        record = dead.record if dead else self._r.get(self._keys.delivery(key))
        if record is None:
            return "gone"
        text = record if isinstance(record, str) else bytes(record).decode()
        return self._ledger.replay(key, handler, text)


class Runner(Periodic):
    """The console process's background thread that runs bulk jobs: every ``interval`` s (the
    first time at once) it takes a job that needs a runner and runs it to its end."""

    def __init__(self, jobs: Jobs, interval: float = 0.5) -> None:
        holder = f"console-{secrets.token_hex(4)}"
        super().__init__(
            "bulk-replay",
            interval,
            lambda: jobs.run_once(holder),
            log=log,
            what="bulk replay runner",
            at_once=True,
        )
