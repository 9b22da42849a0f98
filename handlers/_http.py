"""Outbound HTTP for the built-in handlers: one client per process, and what an answer means.

``post`` is for sync code (notifications, sync handlers) with an ``httpx.Client``; ``apost`` for
``async def`` handlers with an ``httpx.AsyncClient``, one per process and event loop (the
worker has one loop per process, workers/aio.py), so connections are reused across runs.

Retry policy, shared by ``telegram`` and ``forward``:

- a connection that could not be opened is tried again at once, twice, inside the handler (the
  request never left, so this is cheap and safe; a target restarting is the usual cause);
- a timeout, a broken connection, 408, 429 and 5xx are transient: the worker retries the handler
  with backoff (``Retry-After`` is honoured as the least delay);
- any other answer that is not 2xx is permanent: retrying cannot help, the event is dead-lettered
  for that handler and can be replayed once the target is fixed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from handlers.errors import PermanentError, TransientError
from uphooks import tracing
from uphooks.retry_after import retry_after as retry_after  # handlers use _http.retry_after

# httpx logs every request URL at INFO, and a Bot API URL carries the bot's token.
logging.getLogger("httpx").setLevel(logging.WARNING)

_client: tuple[int, httpx.Client] | None = None


def client() -> httpx.Client:
    """The process's client (connections must not cross a fork, so one per pid)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), httpx.Client(follow_redirects=False))
    return _client[1]


_async_client: tuple[int, asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None


def async_client() -> httpx.AsyncClient:
    """The process's async client, for the running event loop (a client is bound to its loop)."""
    global _async_client
    loop = asyncio.get_running_loop()
    if _async_client is None or _async_client[:2] != (os.getpid(), loop):
        # httpx's limits: 100 connections (so 100 calls in flight per host), 20 kept idle;
        # httpcore scans its pool on every request, so a larger pool costs CPU per call.
        _async_client = (os.getpid(), loop, httpx.AsyncClient(follow_redirects=False))
    return _async_client[2]


_retry_connect = retry(
    retry=retry_if_exception_type((httpx.ConnectError, httpx.ConnectTimeout)),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.2, max=1),
    reraise=True,
)


@contextmanager
def _network_failures(what: str, timeout: float) -> Iterator[None]:
    """Timeouts and transport errors become TransientError, without the URL (it may hold a
    token)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        late = f"{what}: no answer within {timeout:g}s ({type(exc).__name__})"
        raise TransientError(late) from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc


def post(what: str, url: str, timeout: float, **kwargs: Any) -> httpx.Response:
    """POST, with the short in-handler retry for connections; network failures -> transient.

    Traced as a client span when tracing is on (``traceparent`` goes along)."""
    headers = dict(kwargs.pop("headers", None) or {})
    with (
        _network_failures(what, timeout),
        tracing.client_span(what, httpx.URL(url).host, headers) as span,
    ):
        response: httpx.Response = _retry_connect(client().post)(
            url, timeout=timeout, headers=headers, **kwargs
        )
        tracing.answered(span, response.status_code)
    return response


async def apost(what: str, url: str, seconds: float, **kwargs: Any) -> httpx.Response:
    """``post`` for async handlers, on the process's ``AsyncClient`` (``seconds``: its timeout)."""
    headers = dict(kwargs.pop("headers", None) or {})
    with (
        _network_failures(what, seconds),
        tracing.client_span(what, httpx.URL(url).host, headers) as span,
    ):
        response: httpx.Response = await _retry_connect(async_client().post)(
            url, timeout=seconds, headers=headers, **kwargs
        )
        tracing.answered(span, response.status_code)
    return response


def is_transient(status: int) -> bool:
    return status in (408, 429) or status >= 500


def check(what: str, response: httpx.Response, hint: str = "") -> None:
    """Return on 2xx; raise TransientError or PermanentError otherwise."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"{what}: HTTP {status} {response.text[:300]!r}"
    if is_transient(status):
        raise TransientError(detail, retry_after=retry_after(response))
    if 300 <= status < 400:
        hint = f"redirects are not followed; use the final URL ({response.headers.get('location')})"
    raise PermanentError(f"{detail}{'; ' + hint if hint else ''}")
