"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver import answers
from receiver.headroom import Headroom
from uphooks.keys import Keys
from uphooks.liveness import workers_seen_async
from uphooks.settings import Settings

log = logging.getLogger("uphooks.receiver")


async def healthz(request: Request) -> JSONResponse:
    """The process is alive and serving; says nothing about Redis."""
    return answers.alive()


async def readyz(request: Request) -> JSONResponse:
    """Redis answers in time and has room (receiver/headroom.py), so a delivery sent now would
    be kept; and whether a worker was seen lately (its heartbeat), so "ingress up, nobody
    processing" shows. Without a worker the answer is still 200 (deliveries are kept and wait)
    unless UPHOOKS_READYZ_REQUIRES_WORKER.
    """
    client = request.app.state.redis
    settings: Settings = request.app.state.settings
    try:
        # One round trip: it proves Redis answers and reads the heartbeats.
        seen = await asyncio.wait_for(
            workers_seen_async(client, Keys(settings.key_prefix), settings.heartbeat_stale_seconds),
            settings.ack_timeout_seconds,
        )
    except Exception as exc:
        # The reason goes to our log only: a public probe must not describe our network.
        log.warning("readiness: redis unreachable: %s", exc)
        return answers.not_ready()
    headroom: Headroom = request.app.state.headroom
    memory = headroom.state()
    if not memory["accepting"]:
        return answers.full(seen.as_dict(), memory)
    if seen.alive == 0 and settings.readyz_requires_worker:
        return answers.no_worker(seen.as_dict())
    return answers.ready(seen.as_dict(), memory)
