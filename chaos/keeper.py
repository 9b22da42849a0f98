"""A thread that watches held handlers (``chaos/holds.py``) and kills or releases them."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType

from chaos.holds import Hold, Holds

#: What to do with a hold: "kill" (SIGKILL its process), "release", or None (ask again later).
Decide = Callable[[Hold], str | None]


def release_after(seconds: float) -> Decide:
    return lambda h: "release" if time.time() - h.since >= seconds else None


class Keeper:
    def __init__(self, holds: Holds, decide: Decide, interval: float = 0.01) -> None:
        self.holds = holds
        self.decide = decide
        self.interval = interval
        self.killed: list[Hold] = []
        #: pid -> when the keeper SIGKILLed it.
        self.killed_at: dict[int, float] = {}
        self.released = 0
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Keeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        for hold in self.holds.current():  # nothing stays held after the scenario
            self.holds.release(hold)

    def current(self) -> list[Hold]:
        with self._lock:
            return [h for h in self.holds.current() if h.name not in self._done]

    def kill(self, hold: Hold) -> None:
        with self._lock:
            self._kill(hold)

    def _kill(self, hold: Hold) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hold.pid, signal.SIGKILL)
        self.killed_at[hold.pid] = time.time()
        self._done.add(hold.name)
        self.killed.append(hold)
        self.holds.forget(hold)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for hold in self.holds.current():
                    if hold.name in self._done:
                        continue
                    action = self.decide(hold)
                    if action == "kill":
                        self._kill(hold)
                    elif action == "release":
                        self.holds.release(hold)
                        self._done.add(hold.name)
                        self.released += 1
            time.sleep(self.interval)
