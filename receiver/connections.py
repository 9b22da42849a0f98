"""What one connection may cost: deadlines for the request head and body, caps on connections.

uvicorn 0.54 (httptools) has none of these: its keep-alive timer runs only between requests and is
cancelled by any byte received, so a client trickling a header a byte at a time, or a body, or
sending nothing at all, holds its socket for ever (uvicorn issue #157 lists them as to do). An
ASGI middleware cannot help with the head: the app is called only once the head is complete.
So this is a subclass of uvicorn's own protocol, passed as ``http=`` (``uphooks serve`` does):

- the head (request line and headers) must arrive within ``head_timeout_seconds`` of the
  connection opening, or of the previous answer on a kept-alive connection, and stay below
  ``max_head_bytes``: else 408 (431) and the connection is closed;
- the body must arrive within ``body_timeout_seconds`` of the head: else 408, close, and the app
  sees the client go away (``http.disconnect``);
- at most ``max_connections`` per process and ``max_connections_per_source`` per source address
  (an IPv6 /64 is one source; trusted proxies are not capped per source, and neither is the
  admin listener): one more is closed as soon as it is accepted.

Three things for speed (docs/performance.md): an answer leaves in one ``write`` (uvicorn writes the
status line and headers, then the body, as two segments the client reads separately), and
uvicorn's own access line is off: the app writes a cheaper one of its own (receiver/access.py).
And the deadlines of all connections share one timer per event loop (``_Deadlines``).

Limits of this approach: it leans on uvicorn's protocol internals (``cycle``, the parser
callbacks; tests/test_edge.py catches a uvicorn that changed them); it runs after the kernel has
accepted the connection, so a flood of handshakes is the proxy's or the firewall's to stop; the
response is not timed (it is a few hundred bytes, written in one go to the socket buffer).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Address
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from receiver import metrics
from receiver.allowed_networks import Address, Network, parse_address
from receiver.limits import LogThrottle
from uphooks.settings import Settings, get_settings

log = logging.getLogger("uphooks.receiver")

_LOG = LogThrottle()


def _closed(reason: str, message: str, *args: object) -> None:
    """Count a connection closed for ``reason``; warn once per reason per throttle interval."""
    metrics.connection_closed(reason)
    if _LOG.allow(f"conn:{reason}") is not None:
        log.warning(message, *args)


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    head_seconds: float
    body_seconds: float
    max_head_bytes: int
    max_connections: int
    per_source: int
    uncapped_sources: tuple[Network, ...]
    admin_port: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            settings.head_timeout_seconds,
            settings.body_timeout_seconds,
            settings.max_head_bytes,
            settings.max_connections,
            settings.max_connections_per_source,
            tuple(settings.trusted_proxies),
            settings.admin_port,
        )


def source_key(address: Address | None) -> str:
    """One key per source: the address, or its /64 for IPv6 (one subscriber's usual share)."""
    if address is None:
        return "?"
    if isinstance(address, IPv6Address):
        return address.exploded[:19] + "::/64"
    return str(address)


def _answer(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


_TIMEOUT = _answer(b"408 Request Timeout")
_HEAD_TOO_LARGE = _answer(b"431 Request Header Fields Too Large")


class _Book:
    """The connections this process holds, in total and per source (one event loop: plain ints)."""

    def __init__(self) -> None:
        self.total = 0
        self.per_source: Counter[str] = Counter()


class CoalescingTransport:
    """A transport that holds one ``write`` until the next one (or the end of this turn of the
    event loop), so the head and the body of an answer go out together: one send instead of
    two, and one segment for the client to read. Everything else goes to the real transport;
    ``close`` sends what is held first, ``abort`` drops it."""

    __slots__ = ("_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self.transport.write(held + data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Deadlines:
    """One timer per event loop for the deadlines of all its connections, checked every
    ``every`` seconds, instead of a timer armed and cancelled per phase: three of those per
    request cost as much as some of our checks (``call_later`` and ``cancel``, ~1-2 us each).
    A deadline is honoured to within ``every``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every: float) -> None:
        self.loop = loop
        self.every = every
        self.watched: set[GuardedHttpToolsProtocol] = set()
        self.handle: asyncio.TimerHandle | None = None

    def watch(self, connection: GuardedHttpToolsProtocol) -> None:
        self.watched.add(connection)
        if self.handle is None:
            self.handle = self.loop.call_later(self.every, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        for connection in [c for c in self.watched if c._deadline <= now]:
            connection._expire()
        self.handle = self.loop.call_later(self.every, self.sweep) if self.watched else None


_DEADLINES: dict[asyncio.AbstractEventLoop, _Deadlines] = {}


def _deadlines(loop: asyncio.AbstractEventLoop, limits: EdgeLimits) -> _Deadlines:
    found = _DEADLINES.get(loop)
    if found is None:
        for old in [old for old in _DEADLINES if old.is_closed()]:
            del _DEADLINES[old]
        every = min(0.5, max(0.02, min(limits.head_seconds, limits.body_seconds) / 20))
        found = _DEADLINES[loop] = _Deadlines(loop, every)
    return found


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines and connection caps (module docstring)."""

    limits: ClassVar[EdgeLimits | None] = None
    book: ClassVar[_Book] = _Book()

    @classmethod
    def configure(cls, limits: EdgeLimits) -> None:
        cls.limits = limits
        cls.book = _Book()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if GuardedHttpToolsProtocol.limits is None:
            GuardedHttpToolsProtocol.limits = EdgeLimits.from_settings(get_settings())
        self._limits: EdgeLimits = GuardedHttpToolsProtocol.limits
        self._deadlines = _deadlines(self.loop, self._limits)
        self._deadline = math.inf  # loop time; _expiry is called once it passed
        self._expiry: Callable[[], None] | None = None
        self._source: str | None = None  # set while this connection is counted
        self._in_head = True
        self._head_bytes = 0
        self._body_done = False
        # The app writes one line per request itself (receiver/access.py): cheaper, and for a
        # delivery it is also the line that names its key.
        self.access_log = False

    # -- connection ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
        limits = self._limits
        if self.server is not None and self.server[1] == limits.admin_port:
            self._arm(limits.head_seconds, self._head_expired)
            return  # the admin listener: reached from this host or the cluster only
        book = self.book
        address = parse_address(self.client[0]) if self.client else None
        capped = address is None or not any(address in net for net in limits.uncapped_sources)
        key = source_key(address) if capped else ""
        if book.total >= limits.max_connections:
            self._refuse_connection("total", f"{limits.max_connections} open connections")
            return
        if capped and book.per_source[key] >= limits.per_source:
            self._refuse_connection("per_source", f"{limits.per_source} from {key}")
            return
        book.total += 1
        book.per_source[key] += 1
        self._source = key
        self._arm(limits.head_seconds, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._deadlines.watched.discard(self)
        if self._source is not None:
            book = self.book
            book.total -= 1
            book.per_source[self._source] -= 1
            if book.per_source[self._source] <= 0:
                del book.per_source[self._source]
            self._source = None
        super().connection_lost(exc)

    def _refuse_connection(self, reason: str, detail: str) -> None:
        _closed(
            reason,
            "connection refused: %s already; raise UPHOOKS_MAX_CONNECTIONS%s if these are "
            "real senders",
            detail,
            "_PER_SOURCE (or list the proxy in UPHOOKS_TRUSTED_PROXIES)"
            if reason == "per_source"
            else "",
        )
        self.transport.abort()

    # -- the request's phases ------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > self._limits.max_head_bytes:
                self._close_with(_HEAD_TOO_LARGE, "head_too_large")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._body_done = False
        self._arm(self._limits.body_seconds, self._body_expired)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_done = True
        response_sent = self.cycle is not None and self.cycle.response_complete
        super().on_message_complete()
        if response_sent:  # answered before the body was read (a 413, a 401): next request
            self._next_head()
        else:
            self._disarm()  # the app has the request; its own timeouts bound it

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_done and not self.transport.is_closing():
            self._next_head()
        # else the body is still arriving after an early answer: its deadline keeps running

    def _next_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._arm(self._limits.head_seconds, self._head_expired)

    # -- timers --------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._deadline = self.loop.time() + seconds
        self._expiry = callback
        self._deadlines.watch(self)

    def _disarm(self) -> None:
        self._deadline = math.inf
        self._expiry = None

    def _expire(self) -> None:
        callback = self._expiry
        self._disarm()
        if callback is not None:
            callback()

    def _head_expired(self) -> None:
        if self._head_bytes:
            self._close_with(_TIMEOUT, "head_timeout")
        else:  # an idle connection, before a first request or between two: close quietly
            metrics.connection_closed("idle")
            if not self.transport.is_closing():
                self.transport.close()

    def _body_expired(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The app waits in receive(): it gets http.disconnect, and whatever it sends after
            # is dropped (uvicorn's send returns at once once disconnected).
            cycle.disconnected = True
            cycle.message_event.set()
            self._close_with(_TIMEOUT, "body_timeout")
        else:
            self._close_with(b"", "body_timeout")

    def _close_with(self, answer: bytes, reason: str) -> None:
        _closed(
            reason,
            "closed a connection from %s: %s (UPHOOKS_HEAD_TIMEOUT_SECONDS=%g, "
            "UPHOOKS_BODY_TIMEOUT_SECONDS=%g, UPHOOKS_MAX_HEAD_BYTES=%d)",
            self.client[0] if self.client else "?",
            reason.replace("_", " "),
            self._limits.head_seconds,
            self._limits.body_seconds,
            self._limits.max_head_bytes,
        )
        if self.transport.is_closing():
            return
        if answer:
            self.transport.write(answer)
        self.transport.close()
