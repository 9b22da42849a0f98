"""Calling a built-in (``async def``) handler directly, as a plugin's own tests would."""

from __future__ import annotations

import asyncio
import inspect

from handlers import Context
from handlers.registry import HandlerSpec
from uphooks.events import BaseEvent


def run_handler(spec: HandlerSpec, event: BaseEvent, ctx: Context) -> None:
    result = spec.func(event, ctx)
    assert inspect.iscoroutine(result), f"{spec.name} is not async"
    asyncio.run(result)
