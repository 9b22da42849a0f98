"""The independent store the counting handler writes to: SQLite, one row per idempotency key.

Two tables:

- ``effects``: the side effect itself, ``key`` UNIQUE. A second insert for a key is refused by the
  constraint; the attempt is still counted (``runs.outcome = 'dup'``), because a handler without
  such a constraint would have taken effect twice.
- ``runs``: one row per handler invocation (started, ended, outcome, pid). A run with no end was
  killed. ``note`` holds a broken pipeline invariant seen from inside the handler: it ran although
  the done marker was already set, or without holding the lease (a concurrent second run).

Every process opens its own connection (SQLite connections must not cross a fork); WAL mode lets
several pool children write at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY,
    handler TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS runs_key ON runs (key);
"""


@dataclass(frozen=True)
class Run:
    key: str
    attempt: int
    pid: int
    started: float
    ended: float | None
    outcome: str | None
    note: str | None


class EffectStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[tuple[int, sqlite3.Connection]] = []

    def create(self) -> EffectStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._db()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        return self

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (one per process and thread)."""
        mine: tuple[int, sqlite3.Connection] | None = getattr(self._local, "conn", None)
        if mine is None or mine[0] != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            mine = (os.getpid(), conn)
            self._local.conn = mine
            with self._lock:
                self._opened.append(mine)
        return mine[1]

    def close(self) -> None:
        with self._lock:
            for pid, conn in self._opened:
                if pid == os.getpid():
                    conn.close()
            self._opened.clear()
        self._local = threading.local()

    # -- the handler's side ------------------------------------------------------------------
    def run_started(self, key: str, attempt: int) -> int:
        cur = self._db().execute(
            "INSERT INTO runs (key, attempt, pid, started) VALUES (?, ?, ?, ?)",
            (key, attempt, os.getpid(), time.time()),
        )
        return int(cur.lastrowid or 0)

    def run_ended(self, run_id: int, outcome: str, note: str | None = None) -> None:
        self._db().execute(
            "UPDATE runs SET ended = ?, outcome = ?, note = ? WHERE id = ?",
            (time.time(), outcome, note, run_id),
        )

    def failures(self, key: str) -> int:
        row = (
            self._db()
            .execute("SELECT COUNT(*) FROM runs WHERE key = ? AND outcome = 'fail'", (key,))
            .fetchone()
        )
        return int(row[0])

    def apply(self, run_id: int, key: str, handler: str, attempt: int, note: str | None) -> bool:
        """The side effect, and the run's end, in one transaction. False: already applied."""
        db = self._db()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            try:
                db.execute(
                    "INSERT INTO effects (key, handler, attempt, pid, at) VALUES (?, ?, ?, ?, ?)",
                    (key, handler, attempt, os.getpid(), now),
                )
                outcome = "effect"
            except sqlite3.IntegrityError:
                outcome = "dup"
            db.execute(
                "UPDATE runs SET ended = ?, outcome = ?, note = ? WHERE id = ?",
                (now, outcome, note, run_id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return outcome == "effect"

    # -- the harness's side ------------------------------------------------------------------
    def effect_times(self) -> dict[str, float]:
        return dict(self._db().execute("SELECT key, at FROM effects").fetchall())

    def runs(self, key: str | None = None) -> list[Run]:
        sql = "SELECT key, attempt, pid, started, ended, outcome, note FROM runs"
        rows = (
            self._db().execute(sql + " WHERE key = ? ORDER BY id", (key,))
            if key is not None
            else self._db().execute(sql + " ORDER BY id")
        )
        return [Run(*row) for row in rows.fetchall()]

    def dup_keys(self) -> Counter[str]:
        """Keys whose effect was attempted again after it had been applied (absorbed reruns)."""
        rows = (
            self._db()
            .execute("SELECT key, COUNT(*) FROM runs WHERE outcome = 'dup' GROUP BY key")
            .fetchall()
        )
        return Counter({str(k): int(n) for k, n in rows})

    def violations(self) -> list[Run]:
        return [r for r in self.runs() if r.note]
