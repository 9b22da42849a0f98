"""Every status code the ingress answers, decided here with the sender's retry policy in mind.

Upload-Post retries timeouts, connection errors, 5xx, 408 and 429, and treats any other 4xx as
final (../shared/delivery-facts.md). So:

- 2xx only once the delivery is in Redis;
- 4xx only for requests that can never become valid, whoever retries them;
- 503 (retried) for anything we cannot keep *yet*: Redis down or slow, overloaded.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

RETRY_AFTER_SECONDS = 5


def accepted(key: str) -> JSONResponse:
    return JSONResponse({"status": "accepted", "idempotency_key": key, "duplicate": False}, 202)


def duplicate(key: str) -> JSONResponse:
    return JSONResponse({"status": "duplicate", "idempotency_key": key, "duplicate": True}, 200)


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"status": "rejected", "error": error, "detail": detail}, status)


def bad_request(detail: str) -> JSONResponse:
    return _error(400, "bad_request", detail)


def too_large(limit: int) -> JSONResponse:
    return _error(413, "payload_too_large", f"the body is larger than {limit} bytes")


def unsupported_media_type(content_type: str) -> JSONResponse:
    return _error(415, "unsupported_media_type", f"expected application/json, got {content_type!r}")


def unavailable(detail: str) -> JSONResponse:
    response = JSONResponse(
        {"status": "unavailable", "error": "unavailable", "detail": detail}, 503
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
