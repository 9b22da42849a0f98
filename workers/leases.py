"""Leases that hold on any pool: who holds a pair, and keeping that true while it runs.

A run holds its pair's lease (``lease:<key>:<handler>``, ``UPHOOKS_LEASE_SECONDS``). While the
handler runs, a thread of the process renews every lease the process holds every third of that
time, so a handler may run as long as it needs to on any pool (prefork, solo, threads; Celery's
time limits, where the pool enforces them, still apply), and the lease of a process that died
runs out within one lease time: the scheduler then sees a ``running`` pair without a lease and
publishes it again (workers/schedule.py).

What a lease cannot promise: a process frozen longer than the lease (SIGSTOP, a VM paused, a
handler holding the GIL in C code for that long) loses it, and another worker may start the
same pair. When the first run comes back, renewal and settling find the lease gone, say so in
the log, and its outcome is not recorded (settle.lua). Keep the lease well above such pauses.

A host cut off from Redis (its network gone) cannot renew, and its leases run out while its
handlers may still run. So the process fences itself: when no renewal has reached Redis for two
thirds of a lease while it holds one, it SIGKILLs itself (a pool child; Celery starts another)
before the lease can run out and another host takes the pair over. The run is then lost like
any killed one, and its pair runs again elsewhere, once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from workers.ledger import Ledger

log = logging.getLogger("uphooks.worker")

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


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class LeaseKeeper:
    """Renews the leases this process holds, on a thread of its own, until they are released."""

    def __init__(
        self, ledger: Ledger, lease_seconds: float, fence: Callable[[], None] = _kill_self
    ) -> None:
        self._ledger = ledger
        self._every = lease_seconds / 3
        # Fenced when no renewal (or claim) was sent and answered for this long: well before
        # the lease, timed by Redis from after we sent it, can run out.
        self._fence_after = lease_seconds * 2 / 3
        self._fence = fence
        self._confirmed = time.monotonic()
        self._watch: threading.Thread | None = None
        self._held: dict[str, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def hold(self, holder: str, pairs: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            if not self._held:
                self._confirmed = time.monotonic()  # the claim just answered set the lease
            self._held.setdefault(holder, set()).update(pairs)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="uphooks-leases", daemon=True
                )
                self._thread.start()
                self._watch = threading.Thread(
                    target=self._watch_run, name="uphooks-lease-fence", daemon=True
                )
                self._watch.start()

    def release(self, holder: str, pairs: Iterable[tuple[str, str]] | None = None) -> None:
        with self._lock:
            if pairs is None:
                self._held.pop(holder, None)
                return
            held = self._held.get(holder)
            if held is not None:
                held.difference_update(pairs)
                if not held:
                    del self._held[holder]

    def _holds(self, holder: str, pair: tuple[str, str]) -> bool:
        with self._lock:
            return pair in self._held.get(holder, ())

    def renew_now(self) -> int:
        """Renew every lease held; returns how many were not ours any more."""
        with self._lock:
            snapshot = {holder: sorted(pairs) for holder, pairs in self._held.items()}
        lost = 0
        sent = time.monotonic()
        for holder, pairs in snapshot.items():
            for pair, ok in zip(pairs, self._ledger.renew(pairs, holder), strict=True):
                if not ok and self._holds(holder, pair):  # else it was settled meanwhile
                    lost += 1
                    log.error(
                        "lease lost while the handler runs (was this process paused longer "
                        "than UPHOOKS_LEASE_SECONDS?); another worker may run it too, and this "
                        "run's outcome will not be recorded",
                        extra={"delivery_key": pair[0], "handler": pair[1]},
                    )
                    self.release(holder, [pair])
        self._confirmed = sent  # every renewal above was answered
        return lost

    def _watch_run(self) -> None:
        # Apart from the renewals, which may hang on a dead network for a socket timeout.
        while not self._wake.wait(min(0.25, self._every / 4)):
            with self._lock:
                held = sum(len(p) for p in self._held.values())
            silent = time.monotonic() - self._confirmed
            if held and silent >= self._fence_after:
                log.critical(
                    "no lease renewal reached Redis for %.1fs (UPHOOKS_LEASE_SECONDS=%.0f) while "
                    "%d pair(s) run here: this process stops itself before its leases run out, "
                    "so no other worker runs them at the same time; they run again elsewhere",
                    silent,
                    self._every * 3,
                    held,
                )
                self._fence()
                return

    def _run(self) -> None:
        while not self._wake.wait(self._every):
            try:
                self.renew_now()
            except Exception as exc:  # Redis away: the next round tries again
                log.warning("lease renewal failed (will keep trying): %r", exc)
