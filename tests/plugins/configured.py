"""A plugin whose handlers depend on settings: it defines ``build_router(settings)``."""

from __future__ import annotations

from handlers import Context, Options, Router
from uphooks.events import BaseEvent
from uphooks.settings import Settings


def build_router(settings: Settings) -> Router:
    router = Router()

    @router.on(
        "upload_completed",
        name="test.configured",
        options=Options(queue=f"{settings.queue}.configured"),
    )
    def configured(event: BaseEvent, ctx: Context) -> None:
        pass

    return router
