"""Resident memory sampled in a thread while a benchmark runs: :class:`Sampling` is the loop
(every ``interval`` seconds, from entering the ``with`` block until leaving it); :class:`Sampler`
samples one process and its children."""

from __future__ import annotations

import threading
import time
from typing import Self

from harness.procfs import children, rss_kb

#: One sample: seconds since the start, the process's RSS (kB), each child's RSS (kB).
Sample = tuple[float, int, list[int]]


class Sampling:
    """Calls :meth:`sample` every ``interval`` seconds in a thread, inside a ``with`` block."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def sample(self, t: float) -> None:
        """One sample, ``t`` seconds after entering."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample(time.monotonic() - self._t0)
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class Sampler(Sampling):
    """Samples RSS of a process (and its children) every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(interval)
        self.pid = pid
        self.samples: list[Sample] = []

    def sample(self, t: float) -> None:
        kids = [rss_kb(c) for c in children(self.pid)]
        self.samples.append((t, rss_kb(self.pid), kids))

    @property
    def max_mb(self) -> float:
        return max((s[1] for s in self.samples), default=0) / 1024
