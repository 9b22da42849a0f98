"""Holding a handler mid-run so the harness can kill it there, and only there.

A held handler writes ``holds/<pid>-<n>`` (its delivery key inside) and waits until
``release/<pid>-<n>`` exists. It cannot reach its side effect before the harness released it, so a
process the harness kills while it is held was killed *before* the effect, by construction.
A deadline keeps a forgotten hold from blocking for ever (it stays below the task time limits).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

_counter = itertools.count()


@dataclass(frozen=True)
class Hold:
    name: str
    pid: int
    key: str
    since: float


class Holds:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._holds = self.root / "holds"
        self._release = self.root / "release"

    def create(self) -> Holds:
        self._holds.mkdir(parents=True, exist_ok=True)
        self._release.mkdir(parents=True, exist_ok=True)
        return self

    # -- the handler's side ------------------------------------------------------------------
    def wait(self, key: str, deadline_s: float) -> bool:
        """Block until released; False if the deadline passed first."""
        name = f"{os.getpid()}-{next(_counter)}"
        hold, release = self._holds / name, self._release / name
        tmp = hold.with_suffix(".tmp")
        tmp.write_text(key, encoding="utf-8")
        tmp.rename(hold)  # atomic: the harness never reads a half-written file
        end = time.monotonic() + deadline_s
        try:
            while not release.exists():
                if time.monotonic() > end:
                    return False
                time.sleep(0.005)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                hold.unlink()
            with contextlib.suppress(FileNotFoundError):
                release.unlink()

    # -- the harness's side ------------------------------------------------------------------
    def current(self) -> list[Hold]:
        found = []
        for path in self._holds.glob("*-*"):
            if path.suffix == ".tmp":
                continue
            try:
                key = path.read_text(encoding="utf-8")
                since = path.stat().st_mtime
            except FileNotFoundError:
                continue
            found.append(Hold(path.name, int(path.name.split("-", 1)[0]), key, since))
        return sorted(found, key=lambda h: h.since)

    def release(self, hold: Hold) -> None:
        (self._release / hold.name).touch()

    def forget(self, hold: Hold) -> None:
        """After the holder was killed: its files are the harness's to clean."""
        for path in (self._holds / hold.name, self._release / hold.name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
