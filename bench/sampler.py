"""Resident memory of a process and its children, sampled in a thread while a benchmark runs."""

from __future__ import annotations

import threading
import time

from harness.procfs import children, rss_kb

#: One sample: seconds since the start, the process's RSS (kB), each child's RSS (kB).
Sample = tuple[float, int, list[int]]


class Sampler:
    """Samples RSS of a process (and its children) every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = [rss_kb(c) for c in children(self.pid)]
            self.samples.append((time.monotonic() - self._t0, rss_kb(self.pid), kids))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def max_mb(self) -> float:
        return max((s[1] for s in self.samples), default=0) / 1024
