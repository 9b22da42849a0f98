"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse


async def healthz(request: Request) -> JSONResponse:
    """The process is alive and serving; says nothing about Redis."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Redis answers in time, so a delivery sent now would be kept."""
    client = request.app.state.redis
    timeout = request.app.state.settings.ack_timeout_seconds
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "redis": f"unreachable: {exc}"}, 503)
    return JSONResponse({"status": "ready", "redis": "ok"})
