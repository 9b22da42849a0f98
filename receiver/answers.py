"""Every status code the ingress answers, decided here with the sender's retry policy in mind.

Upload-Post retries timeouts, connection errors, 5xx, 408 and 429, and treats any other 4xx as
final (../shared/delivery-facts.md). So:

- 2xx only once the delivery is in Redis;
- 4xx only for requests that can never become valid, whoever retries them;
- 503 (retried) for anything we cannot keep *yet*: Redis down, slow or nearly full, overloaded,
  and a signature that may be made with a secret we do not know yet (docs/security.md,
  "Rotation");
- 429 (retried) for a source past its refusal budget (receiver/throttle.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSON

from receiver.verdicts import Failed, Reason


class JSONResponse(_StarletteJSON):
    """Starlette's, rendered by orjson: the same compact bytes, a tenth of the time."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


RETRY_AFTER_SECONDS = 5
# A nearly full Redis gets room back as records expire or memory is added: minutes, not seconds.
REDIS_FULL_RETRY_AFTER_SECONDS = 30
# Failures that may pass later without the sender changing anything: a secret rotated before our
# configuration knew it, our clock behind the sender's. Everything else can never pass.
_MAY_PASS_LATER = frozenset({Reason.MISMATCH, Reason.EARLY})


# ``idempotency_key`` is the delivery key's older name in this answer, kept for clients that read
# it; handlers see the same value as ``ctx.delivery_key``.
def accepted(key: str) -> JSONResponse:
    return JSONResponse(
        {"status": "accepted", "delivery_key": key, "idempotency_key": key, "duplicate": False},
        202,
    )


def duplicate(key: str) -> JSONResponse:
    return JSONResponse(
        {"status": "duplicate", "delivery_key": key, "idempotency_key": key, "duplicate": True},
        200,
    )


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"status": "rejected", "error": error, "detail": detail}, status)


def bad_request(detail: str) -> JSONResponse:
    return _error(400, "bad_request", detail)


def bad_length() -> JSONResponse:
    return bad_request("Content-Length must be one non-negative integer")


def unverified(failure: Failed, mismatch_status: int) -> JSONResponse:
    """A delivery that failed verification; nothing of it was kept.

    ``mismatch_status`` (UPHOOKS_VERIFY_MISMATCH_STATUS) is 503 by default so the sender retries
    a delivery signed with a secret we do not know yet, or 401 to make every failure final.
    """
    if failure.reason in _MAY_PASS_LATER and mismatch_status == 503:
        return unavailable(f"not verified: {failure.detail}; retry later")
    return _error(401, "unauthorized", f"not verified: {failure.detail}")


def forbidden_source() -> JSONResponse:
    return _error(403, "forbidden", "this source address may not post deliveries")


def too_large(limit: int) -> JSONResponse:
    response = _error(413, "payload_too_large", f"the body is larger than {limit} bytes")
    # The rest of an oversized body is not read (beyond receiver/limits.py's bounded discard).
    response.headers["Connection"] = "close"
    return response


def throttled(retry_after: int, close: bool = False) -> JSONResponse:
    """A source past its refusal budget (receiver/throttle.py). 429 is retried by the sender, so
    a valid delivery caught here is delayed, never lost; ``close`` when its body was not read."""
    response = _error(
        429,
        "too_many_refusals",
        "this source sent too many requests that were refused; retry later",
    )
    response.headers["Retry-After"] = str(retry_after)
    if close:
        response.headers["Connection"] = "close"
    return response


def unsupported_media_type(content_type: str) -> JSONResponse:
    return _error(415, "unsupported_media_type", f"expected application/json, got {content_type!r}")


def overloaded(limit: int) -> JSONResponse:
    return unavailable(f"more than {limit} deliveries in progress; retry later")


def redis_full() -> JSONResponse:
    """Redis is above UPHOOKS_REDIS_MEMORY_LIMIT_RATIO of its maxmemory (receiver/headroom.py):
    nothing was kept. 503, never a 4xx: it can be kept once Redis has room again."""
    return unavailable(
        "the queue is nearly full; retry later", retry_after=REDIS_FULL_RETRY_AFTER_SECONDS
    )


def unavailable(detail: str, retry_after: int = RETRY_AFTER_SECONDS) -> JSONResponse:
    response = JSONResponse(
        {"status": "unavailable", "error": "unavailable", "detail": detail}, 503
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def not_replicated(detail: str) -> JSONResponse:
    """Kept by the master but not confirmed by UPHOOKS_ACK_REPLICAS replicas in time: retried,
    and the retry is answered 200 (duplicate) once they have it (receiver/replicas.py)."""
    return unavailable(f"not replicated yet: {detail}")


def alive() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def ready(
    workers: dict[str, object] | None = None, memory: dict[str, object] | None = None
) -> JSONResponse:
    body: dict[str, object] = {"status": "ready", "redis": "ok"}
    if workers is not None:
        body["workers"] = workers
    if memory is not None:
        body["memory"] = memory
    return JSONResponse(body)


def full(workers: dict[str, object], memory: dict[str, object]) -> JSONResponse:
    """Redis answers but is nearly full: a delivery sent now would be answered 503."""
    body = {"status": "unavailable", "redis": "full", "workers": workers, "memory": memory}
    return JSONResponse(body, 503)


def no_worker(workers: dict[str, object]) -> JSONResponse:
    """Redis answers but no worker beat lately (only with UPHOOKS_READYZ_REQUIRES_WORKER)."""
    return JSONResponse({"status": "unavailable", "redis": "ok", "workers": workers}, 503)


def not_ready() -> JSONResponse:
    return JSONResponse({"status": "unavailable", "redis": "unreachable"}, 503)
