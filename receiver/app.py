"""The ingress application, assembled from plain lists."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from receiver.enqueue import Enqueuer
from receiver.health import healthz, readyz
from receiver.ingest import receive
from uphooks.redis import async_client
from uphooks.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = async_client(settings)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        app.state.settings = settings
        app.state.redis = client
        app.state.enqueuer = enqueuer
        try:
            yield
        finally:
            await enqueuer.stop()
            await client.aclose()

    routes = [
        Route(settings.webhook_path, receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def app() -> Starlette:
    """Factory for ``uvicorn --factory receiver.app:app``."""
    return create_app()
