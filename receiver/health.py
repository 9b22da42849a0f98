"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver import answers

log = logging.getLogger("uphooks.receiver")


async def healthz(request: Request) -> JSONResponse:
    """The process is alive and serving; says nothing about Redis."""
    return answers.alive()


async def readyz(request: Request) -> JSONResponse:
    """Redis answers in time, so a delivery sent now would be kept."""
    client = request.app.state.redis
    timeout = request.app.state.settings.ack_timeout_seconds
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except Exception as exc:
        # The reason goes to our log only: a public probe must not describe our network.
        log.warning("readiness: redis unreachable: %s", exc)
        return answers.not_ready()
    return answers.ready()
