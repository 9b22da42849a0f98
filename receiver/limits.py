"""What one request may cost: body size, log lines (requests in progress: receiver/gate.py).

Each bound answers at once instead of waiting, since a request that waits in an unbounded queue
costs memory and, past the sender's ~10 s, a retry anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import ClientDisconnect, Request


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
    # ASGI's messages read directly: Starlette's ``stream()`` is an async generator, which cost
    # more than the rest of this function for the usual body that comes in one message.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif kind == "http.disconnect":
            raise ClientDisconnect


class Disconnected(Exception):
    """The client went away (or its body deadline passed) before the body was read."""


async def read_body_or_disconnect(request: Request, limit: int) -> bytes:
    """:func:`read_body`, with a client that went away raised as :class:`Disconnected`."""
    try:
        return await read_body(request, limit)
    except ClientDisconnect as exc:
        raise Disconnected from exc


# After a 413 the rest of the body is read and thrown away before the answer goes out, so a
# client that sends its whole body before reading (most do) reads the 413 instead of a
# connection reset. Bounded: this many bytes, this long in all, and no pause longer than
# DISCARD_PAUSE_SECONDS (a client that stopped sending is waiting for the answer). Past a bound
# the 413 goes out and the connection is closed mid-body.
DISCARD_BYTES = 32 * 1024 * 1024
DISCARD_SECONDS = 10.0
DISCARD_PAUSE_SECONDS = 1.0


async def discard_body(request: Request, limit: int = DISCARD_BYTES) -> int:
    """Read and drop what is left of the body within the bounds above; the bytes dropped."""
    if "100-continue" in request.headers.get("expect", "").lower():
        return 0  # the client waits for our answer before sending the body: nothing to drain
    seen = 0
    deadline = time.monotonic() + DISCARD_SECONDS
    while seen <= limit:
        wait = min(DISCARD_PAUSE_SECONDS, deadline - time.monotonic())
        if wait <= 0:
            break
        try:
            message = await asyncio.wait_for(request.receive(), wait)
        except TimeoutError:
            break
        if message["type"] != "http.request":
            break  # the client went away
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return seen


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

    def warn(self, logger: logging.Logger, reason: str, message: str, *args: object) -> None:
        """Log ``message % args`` as a warning unless ``reason`` logged within ``interval``;
        the line then tells how many were skipped."""
        skipped = self.allow(reason)
        if skipped is not None:
            logger.warning(
                message + "%s", *args, f" ({skipped} more like it not logged)" if skipped else ""
            )


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
