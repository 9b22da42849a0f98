"""Handlers for tests/test_tracing.py: one opens a child span, one fails its first attempt."""

from __future__ import annotations

from handlers import Context, Options, TransientError, on
from uphooks.events import BaseEvent


@on("upload_completed", name="traced.child")
def child(event: BaseEvent, ctx: Context) -> None:
    with ctx.span("traced.lookup", customer="c-1") as span:
        assert span is not None  # tracing is on in these tests


@on("upload_completed", name="traced.flaky", options=Options(backoff=(0.2, 0.2)))
def flaky(event: BaseEvent, ctx: Context) -> None:
    if ctx.attempt == 1:
        raise TransientError("the first attempt fails on purpose")
