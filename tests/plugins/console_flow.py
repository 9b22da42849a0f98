"""Handlers for the console store's end-to-end tests (tests/test_console_store.py)."""

from __future__ import annotations

import os
import signal
import time

from handlers import Context, PermanentError, TransientError, on
from tests.plugins import store
from uphooks.events import BaseEvent


@on("*", name="console.ok")
def ok(event: BaseEvent, ctx: Context) -> None:
    store.record(ctx.handler_name, ctx.pair_key)


@on("upload_completed", name="console.flaky", max_attempts=5, backoff=(0.2, 0.4))
def flaky(event: BaseEvent, ctx: Context) -> None:
    """Fails its first two attempts, then succeeds."""
    if ctx.attempt < 3:
        raise TransientError(f"failing on purpose, attempt {ctx.attempt}")
    store.record(ctx.handler_name, ctx.pair_key)


@on("social_account_disconnected", name="console.broken")
def broken(event: BaseEvent, ctx: Context) -> None:
    if not store.flag("mended"):
        raise PermanentError("broken on purpose; set the 'mended' flag and replay")
    store.record(ctx.handler_name, ctx.pair_key)


@on("social_account_reauth_required", name="console.gate")
def gate(event: BaseEvent, ctx: Context) -> None:
    """Runs while the ``hold`` flag is set (at most 30 s), so a test sees it running."""
    deadline = time.monotonic() + 30
    while store.flag("hold") and time.monotonic() < deadline:
        time.sleep(0.05)
    store.record(ctx.handler_name, ctx.pair_key)


@on("console_crash", name="console.crashy")
def crashy(event: BaseEvent, ctx: Context) -> None:
    """Kills its own process on its first run: the run is lost, the next one succeeds."""
    if store.client().set(store.key(f"crashed:{ctx.delivery_key}"), 1, nx=True):
        os.kill(os.getpid(), signal.SIGKILL)
    store.record(ctx.handler_name, ctx.pair_key)


@on("console_stubborn", name="console.stubborn", max_attempts=50, backoff=(0.5, 0.5))
def stubborn(event: BaseEvent, ctx: Context) -> None:
    """Fails while the ``stubborn`` flag is set."""
    if store.flag("stubborn"):
        raise TransientError(f"still failing, attempt {ctx.attempt}")
    store.record(ctx.handler_name, ctx.pair_key)
