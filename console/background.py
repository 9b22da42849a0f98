"""The console process's background threads (bulk replays, Overview samples): started with the
app, stopped with it."""

from __future__ import annotations

import threading


class Background:
    """A daemon thread that runs :meth:`_loop` from :meth:`start` until :meth:`stop`; the loop
    waits on ``self._stop`` (``self._interval`` seconds) so a stop ends it at once."""

    def __init__(self, name: str, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        raise NotImplementedError
