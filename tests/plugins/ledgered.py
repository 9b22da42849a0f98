"""Handlers that count every run, for the ledger's exactly-once tests (tests/test_ledger.py).

Each run appends its attempt number to ``runs:<handler>:<delivery key>``, so a test sees how
often each pair ran and with which attempts, not only its effects.
"""

from __future__ import annotations

import os
import signal
import time

from handlers import Context, Options, PermanentError, TransientError, on
from tests.plugins import store
from uphooks.events import BaseEvent


def _ran(ctx: Context) -> None:
    store.client().rpush(store.key(f"runs:{ctx.handler_name}:{ctx.delivery_key}"), ctx.attempt)


@on("upload_completed", name="ledger.steady")
def steady(event: BaseEvent, ctx: Context) -> None:
    _ran(ctx)


@on("upload_completed", name="ledger.flaky", options=Options(max_attempts=5, backoff=(0.2, 0.4)))
def flaky(event: BaseEvent, ctx: Context) -> None:
    """Fails until its attempt reaches the ``ok_at`` control value (default 3)."""
    _ran(ctx)
    if ctx.attempt < int(store.client().get(store.key("ctl:ok_at")) or 3):
        raise TransientError(f"failing on purpose, attempt {ctx.attempt}")


@on("upload_completed", name="ledger.broken")
def broken(event: BaseEvent, ctx: Context) -> None:
    _ran(ctx)
    if not store.flag("mended"):
        raise PermanentError("broken on purpose; set the 'mended' flag and replay")


@on("social_account_connected", name="ledger.long")
def long_running(event: BaseEvent, ctx: Context) -> None:
    """Runs for ``long_seconds`` (control value): longer than its lease."""
    _ran(ctx)
    time.sleep(float(store.client().get(store.key("ctl:long_seconds")) or 0))


@on("social_account_reauth_required", name="ledger.paced")
def paced(event: BaseEvent, ctx: Context) -> None:
    """Takes 0.1 s; the run for the delivery named by ``kill_in`` kills its own process once."""
    _ran(ctx)
    time.sleep(0.1)
    if store.client().get(store.key("ctl:kill_in")) == ctx.delivery_key.encode():
        store.client().delete(store.key("ctl:kill_in"))
        os.kill(os.getpid(), signal.SIGKILL)
