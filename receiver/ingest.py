"""``POST <webhook path>``: check a delivery, keep it in Redis, answer.

Only what must be decided at the edge is decided here: is it a JSON object with an event name,
what is its idempotency key. Validation against the event models waits for the worker, so a
payload the models do not (yet) fit is kept and dead-lettered there instead of being refused
with a final 4xx and lost.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver import answers
from receiver.delivery_key import delivery_key
from receiver.enqueue import Enqueuer
from uphooks.settings import Settings

log = logging.getLogger("uphooks.receiver")

# Headers worth keeping with the delivery (signatures, ids, the sender's event name).
_KEPT_HEADER_PREFIXES = ("x-upload-post-", "webhook-")
_KEPT_HEADERS = frozenset({"user-agent", "content-type"})


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json", "text/json", "text/plain") or media.endswith("+json")


async def receive(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    enqueuer: Enqueuer = request.app.state.enqueuer

    content_type = request.headers.get("content-type", "")
    if not _is_json_type(content_type):
        return answers.unsupported_media_type(content_type)
    try:
        body = await _read_body(request, settings.max_body_bytes)
    except _TooLarge:
        return answers.too_large(settings.max_body_bytes)

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return answers.bad_request(f"the body is not valid UTF-8 JSON: {exc}")
    if not isinstance(payload, dict):
        return answers.bad_request("the body must be a JSON object")
    event = payload.get("event") or request.headers.get("x-upload-post-event")
    if not isinstance(event, str) or not event:
        return answers.bad_request("the JSON object has no 'event' name")

    key = delivery_key(request.headers.get("x-upload-post-delivery"), payload)
    headers = {
        name: value
        for name, value in request.headers.items()
        if name in _KEPT_HEADERS or name.startswith(_KEPT_HEADER_PREFIXES)
    }
    record = orjson.dumps(
        {
            "key": key,
            "event": event,
            "received_at": time.time(),
            "headers": headers,
            "body": body.decode("utf-8"),
        }
    )
    try:
        is_new = await asyncio.wait_for(enqueuer.submit(key, record), settings.ack_timeout_seconds)
    except TimeoutError:
        log.warning("redis did not answer in %.1fs; answered 503", settings.ack_timeout_seconds)
        return answers.unavailable("the queue did not answer in time; retry later")
    except Exception as exc:
        log.warning("enqueue failed, answered 503: %s", exc)
        return answers.unavailable("the queue is unavailable; retry later")
    return answers.accepted(key) if is_new else answers.duplicate(key)
