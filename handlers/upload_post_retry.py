"""Built-in ``upload_post_retry`` handler: a failed upload with a transient error is retried.

Settings: ``UPHOOKS_UPLOAD_POST_RETRY_ENABLED`` (off by default), ``_PATTERNS`` (regular
expressions, ";;"-separated, matched case-insensitively against ``result.error``), ``_MAX`` (retry
calls per upload), ``_QUEUE``; the API key and URL are ``UPHOOKS_UPLOAD_POST_API_KEY`` / ``_URL``.

On an ``upload_completed`` with ``success: false`` whose error matches a pattern, it calls
``POST /api/uploadposts/posts/retry`` with the upload's ``request_id`` (a reconciled event has
it) or ``job_id``. Upload-Post then re-enqueues every failed platform of that upload, so:

- one call per upload and *round*: the time of the last call is kept in Redis per upload, and a
  failure that happened before it (another platform of the same round) is covered by it;
- at most ``_MAX`` calls per upload, counted in Redis (``<prefix>:upload-retry:<id>``, kept for
  the de-duplication window), and a short lock per upload so two workers never call at once;
- a call already answered 200 for this delivery is not made again when the handler is re-run
  (``<prefix>:upload-retry-done:<idempotency key>``), and the call carries ``Idempotency-Key:
  ctx.pair_key`` for the provider;
- 409 (nothing left to retry) and 404 (unknown upload) are final and logged; 429, 5xx and no
  answer are transient (the worker retries, ``Retry-After`` honoured); 400 and 401/403 are
  permanent (dead-lettered: fix the key or the id, then replay).

The API key is sent in one header and never logged.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC
from functools import lru_cache
from typing import Annotated, Any

import redis
from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from handlers._settings import BuiltinSettings, builtin_config
from handlers.context import Context
from handlers.errors import PermanentError, TransientError
from handlers.options import Options
from handlers.registry import Router
from uphooks.errors import ConfigurationError
from uphooks.events import UploadCompleted
from uphooks.readback import ReadBack, Unavailable
from uphooks.settings import Settings

HANDLER_NAME = "uphooks.upload_post_retry"
LOCK_SECONDS = 60
#: Errors worth retrying through the API, by default.
DEFAULT_PATTERNS = (
    r"time(d)?[ -]?out",
    r"temporar",
    r"rate.?limit|too many requests",
    r"try again",
    r"\b50[0234]\b|internal (server )?error|service unavailable|bad gateway",
    r"network|connection (reset|refused|error)",
)


def _split_patterns(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(";;") if part.strip()]
    return value


_client: tuple[int, redis.Redis] | None = None


def _redis(settings: Settings) -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():
        from uphooks.redis import sync_client

        _client = (os.getpid(), sync_client(settings))
    return _client[1]


def upload_id(event: UploadCompleted) -> tuple[str, str] | None:
    """``("request_id", id)`` or ``("job_id", id)``: what the retry endpoint is called with."""
    extra: dict[str, Any] = event.model_extra or {}
    request_id = extra.get("request_id")
    if isinstance(request_id, str) and request_id:
        return "request_id", request_id
    if event.job_id:
        return "job_id", event.job_id
    return None


def _created(event: UploadCompleted) -> float:
    at = event.created_at
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


class UploadPostRetrySettings(BuiltinSettings):
    """``UPHOOKS_UPLOAD_POST_RETRY_*``; the API's key and URL are the core settings'
    (``UPHOOKS_UPLOAD_POST_API_KEY``, shared with ``uphooks upload-post``)."""

    model_config = builtin_config("UPHOOKS_UPLOAD_POST_RETRY_")

    # Regular expressions, case-insensitive, separated by ";;": an error matching one is retried.
    patterns: Annotated[list[str], NoDecode, BeforeValidator(_split_patterns)] = Field(
        default_factory=lambda: list(DEFAULT_PATTERNS)
    )
    max: int = Field(default=2, ge=1)  # retries through the API per upload, at most


@lru_cache(maxsize=1)
def upload_post_retry_settings() -> UploadPostRetrySettings:
    return UploadPostRetrySettings()


def enabled() -> bool:
    return upload_post_retry_settings().enabled


def build_router(settings: Settings) -> Router:
    """The plugin's entry: its own settings, and the core ones for the API and the keys."""
    return router_for(settings, upload_post_retry_settings())


def router_for(settings: Settings, own: UploadPostRetrySettings) -> Router:
    key = settings.upload_post_api_key
    if key is None or not key.get_secret_value():
        raise ConfigurationError(
            "UPHOOKS_UPLOAD_POST_API_KEY is not set: the upload_post_retry handler calls "
            "Upload-Post's retry endpoint with it"
        )
    try:
        patterns = [re.compile(p, re.IGNORECASE) for p in own.patterns]
    except re.error as exc:
        raise ConfigurationError(
            f"UPHOOKS_UPLOAD_POST_RETRY_PATTERNS has a pattern that is not a regular "
            f"expression: {exc}"
        ) from exc
    prefix, most = settings.key_prefix, own.max
    keep = settings.dedup_ttl_seconds
    router = Router()

    @router.on(
        "upload_completed",
        success=False,
        name=HANDLER_NAME,
        options=Options(queue=own.queue),
    )
    def upload_post_retry(event: UploadCompleted, ctx: Context) -> None:
        error = event.result.error or ""
        if not any(p.search(error) for p in patterns):
            ctx.log.info("not retried: the error matches no transient pattern")
            return
        ident = upload_id(event)
        if ident is None:
            ctx.log.info("not retried: the event names no request_id or job_id")
            return
        r = _redis(settings)
        state = f"{prefix}:upload-retry:{ident[0]}:{ident[1]}"
        done = f"{prefix}:upload-retry-done:{ctx.pair_key}"
        if r.exists(done):
            return  # this delivery's call was answered already (the handler ran again)
        if not r.set(f"{state}:lock", ctx.pair_key, nx=True, ex=LOCK_SECONDS):
            raise TransientError("another worker is retrying this upload now", retry_after=5)
        try:
            calls, last = r.hmget(state, "calls", "last_at")
            if last is not None and _created(event) <= float(last):
                ctx.log.info("not retried: the retry made after this failure covers it")
                return
            if int(calls or 0) >= most:
                ctx.log.warning(
                    "not retried: this upload was retried %d times already "
                    "(UPHOOKS_UPLOAD_POST_RETRY_MAX)",
                    int(calls or 0),
                )
                return
            if not _call(settings, ident, ctx):
                return
            pipe = r.pipeline()
            pipe.hincrby(state, "calls", 1)
            pipe.hset(state, "last_at", time.time())
            pipe.expire(state, keep)
            pipe.set(done, 1, ex=keep)
            pipe.execute()
        finally:
            r.delete(f"{state}:lock")

    return router


def _call(settings: Settings, ident: tuple[str, str], ctx: Context) -> bool:
    """One POST to the retry endpoint: True on 200, False on 404 and 409 (final, nothing
    counted); raises otherwise."""
    kind, value = ident
    with ReadBack.from_settings(settings, budget=1) as api:
        try:
            response = api.retry(**{kind: value}, idempotency_key=ctx.pair_key)
        except Unavailable as exc:
            raise TransientError(str(exc), retry_after=exc.retry_after) from exc
        status = response.status_code
        said = api.scrub(response.text[:200])
    if status == 200:
        ctx.log.info("asked Upload-Post to retry the failed platforms of %s %s", kind, value)
        return True
    if status == 409:
        ctx.log.info("Upload-Post has nothing to retry for %s %s (409)", kind, value)
        return False
    if status == 404:
        ctx.log.warning("Upload-Post does not know %s %s (404); not retried", kind, value)
        return False
    if status in (401, 403):
        raise PermanentError(f"the API key was refused (HTTP {status}); replay once it is fixed")
    if status == 429 or status >= 500:
        from handlers._http import retry_after

        raise TransientError(
            f"retry endpoint: HTTP {status} {said!r}", retry_after=retry_after(response)
        )
    raise PermanentError(f"retry endpoint refused {kind} {value}: HTTP {status} {said!r}")
