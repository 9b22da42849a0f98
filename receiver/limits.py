"""What one request may cost: body size, requests in progress, log lines.

Each bound answers at once instead of waiting, since a request that waits in an unbounded queue
costs memory and, past the sender's ~10 s, a retry anyway.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver import answers


class TooLarge(Exception):
    pass


class BadLength(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (TooLarge) as soon as it is known to be over ``limit`` bytes.

    ``Content-Length`` is checked before anything is read, and the running size while reading,
    for chunked bodies and senders that lie. Memory stays below ``limit`` plus one chunk.
    """
    declared = request.headers.getlist("content-length")
    if declared:
        if len(set(declared)) > 1 or not declared[0].isdigit() or len(declared[0]) > 18:
            raise BadLength
        if int(declared[0]) > limit:
            raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` webhook requests in progress, the next gets a 503.

    One event loop per process, so a plain counter is exact. Only the webhook path counts: probes
    and the OpenAPI document stay reachable while deliveries are being turned away.
    """

    def __init__(self, app: ASGIApp, *, limit: int, path: str) -> None:
        self.app = app
        self.limit = limit
        self.path = path
        self.path_prefix = path.rstrip("/") + "/"
        self.in_flight = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._counts(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.refused += 1
            await answers.overloaded(self.limit)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _counts(self, path: str) -> bool:
        return path == self.path or path.startswith(self.path_prefix)


class LogThrottle:
    """At most one log line per reason per ``interval`` seconds, telling how many were skipped.

    Refused requests are logged so an operator sees a stale secret or an attack, but a flood of
    them must not turn into a flood of log lines.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def allow(self, reason: str) -> int | None:
        """None: stay quiet. Otherwise log now; the number is how many were skipped before."""
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._skipped[reason] = self._skipped.get(reason, 0) + 1
            return None
        self._last[reason] = now
        return self._skipped.pop(reason, 0)


# orjson reads 1024 levels of nesting but writes only 254, and the delivery key is written from
# the payload. No real event comes near either.
MAX_JSON_DEPTH = 128


def too_deep(body: bytes, payload: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Is ``payload`` (parsed from ``body``) nested deeper than ``limit``?"""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot be: the common case costs two C-speed scans
    stack: list[tuple[object, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: list[object] = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
