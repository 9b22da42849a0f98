"""The baselines, each a tiny ASGI app run with the same uvicorn settings as our ingress.

- ``a0``: a raw ASGI callable answering 202: the server's own ceiling.
- ``a``: a Starlette route answering 202 without reading the body: the framework's ceiling.
- ``c``: read the body, parse it, validate it with pydantic, ``await`` one redis.asyncio LPUSH.
- ``d``: the same, then ``task.delay()`` inside the async endpoint (what most tutorials do).
- ``m``: the floor of any ingress that answers only once a delivery is durably in Redis: read
  the body, check its HMAC signature, hand it to a group commit (one LPUSH of every body that
  arrived while the previous one was in flight), answer an empty 202 once that LPUSH returned.
  No de-duplication, no record, no facts, no access log: what is left is Starlette, one hash and
  Redis's write of the body (with ``appendfsync always`` in ``bench.run``).

Each is a factory (``uvicorn --factory bench.apps:c``); settings come from ``BENCH_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uphooks import signatures
from uphooks.events import EventValidationError, parse_event

PATH = "/webhooks/upload-post"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("BENCH_QUEUE", "bench-c")

Scope = dict[str, Any]


async def _raw(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def a0() -> Any:
    return _raw


def a() -> Starlette:
    async def accept(request: Request) -> Response:
        return Response(status_code=202)

    return Starlette(routes=[Route(PATH, accept, methods=["POST"])])


async def _validated(request: Request) -> tuple[bytes, Response | None]:
    body = await request.body()
    try:
        parse_event(orjson.loads(body))
    except (orjson.JSONDecodeError, EventValidationError) as exc:
        return body, JSONResponse({"error": str(exc)}, 400)
    return body, None


def c() -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = aioredis.Redis.from_url(REDIS_URL, max_connections=64)
        yield
        await app.state.redis.aclose()

    async def accept(request: Request) -> Response:
        body, refused = await _validated(request)
        if refused is not None:
            return refused
        await request.app.state.redis.lpush(QUEUE, body)
        return JSONResponse({"status": "accepted"}, 202)

    return Starlette(routes=[Route(PATH, accept, methods=["POST"])], lifespan=lifespan)


def d() -> Starlette:
    from bench.celery_noop import noop

    async def accept(request: Request) -> Response:
        body, refused = await _validated(request)
        if refused is not None:
            return refused
        noop.delay(body.decode())  # synchronous: blocks the event loop, as tutorials do
        return JSONResponse({"status": "accepted"}, 202)

    return Starlette(routes=[Route(PATH, accept, methods=["POST"])])


class _GroupCommit:
    """Bodies that arrive while one LPUSH is in flight go out together in the next."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self.busy = False

    async def push(self, body: bytes) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((body, done))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._flush())
        await done

    async def _flush(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    await self.client.lpush(QUEUE, *(body for body, _ in batch))
                except Exception as exc:  # every waiter learns it; nothing is answered 202
                    for _, done in batch:
                        done.set_exception(exc)
                    continue
                for _, done in batch:
                    done.set_result(None)
        finally:
            self.busy = False


def m() -> Starlette:
    from bench.common import SECRET

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(REDIS_URL)
        app.state.commit = _GroupCommit(client)
        gc.freeze()  # the collector as our ingress sets it (receiver/app.py), for a fair p99
        gc.set_threshold(10_000, 50, 100)
        yield
        await client.aclose()

    async def accept(request: Request) -> Response:
        body = await request.body()
        headers = request.headers
        stamp = headers.get(signatures.UPLOAD_POST_TIMESTAMP, "")
        given = headers.get(signatures.UPLOAD_POST_SIGNATURE, "")
        expected = signatures.upload_post_signature(SECRET, int(stamp or 0), body)
        if not hmac.compare_digest(given, expected):
            return Response(status_code=401)
        await request.app.state.commit.push(body)
        return Response(status_code=202)

    return Starlette(routes=[Route(PATH, accept, methods=["POST"])], lifespan=lifespan)
