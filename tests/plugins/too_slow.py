"""A plugin whose time limit the task's own soft time limit would cut first: refused at start."""

from __future__ import annotations

from handlers import Context, Options, Router
from uphooks.events import BaseEvent

router = Router()


@router.on("upload_completed", name="test.too_slow", options=Options(time_limit=100_000))
def too_slow(event: BaseEvent, ctx: Context) -> None:
    pass
