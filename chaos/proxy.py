"""A TCP proxy on loopback in front of Redis, to slow it down or cut it off at an exact moment.

- ``latency_s``: every client-to-Redis chunk is held back that long (a delay line: order kept,
  chunks do not queue behind each other's delays).
- ``arm(pattern, ...)``: the first client chunk containing ``pattern`` (e.g. the RESP encoding of
  ``LPUSH``, which is how kombu publishes) trips it:

  - ``action="outage"``: the chunk is dropped, every connection is closed and the port is
    closed for ``outage_s`` (connections refused: Redis is gone exactly when that command was
    sent);
  - ``action="after_reply"``: the chunk goes through, and ``on_trip`` runs as soon as Redis's
    reply to it comes back, before the client sees the reply (e.g. kill the client then);
  - ``action="outage_on_reply"``: the command goes through; the first reply to it that starts
    with ``reply_prefix`` is dropped and Redis is cut off as for ``outage`` (Redis did the
    command, the client never heard of it: e.g. a BRPOP that popped a message); with
    ``reply_contains``, only a reply holding those bytes (e.g. one message among others);
  - ``action="cut_on_reply"``: the same, but only that connection is closed (a reset), the
    others and new ones go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chaos.stack import Cluster
from uphooks_cli.embedded import free_port

#: Commands as redis-py sends them (RESP bulk strings).
LPUSH = b"$5\r\nLPUSH\r\n"
BRPOP = b"$5\r\nBRPOP\r\n"


#: A connection's delay line: (when to forward, bytes); None ends it.
_Line = asyncio.Queue[tuple[float, bytes] | None]


@dataclass
class _Trip:
    pattern: bytes
    action: str
    outage_s: float
    on_trip: Callable[[], None] | None
    reply_prefix: bytes = b""
    reply_contains: bytes = b""
    nth: int = 1  # trip on the nth matching reply
    every: int = 0  # cut_on_reply only: stay armed, cut every ``every``-th matching reply
    seen: int = 0  # matching replies so far (``every`` mode)


@dataclass(eq=False)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    up_reader: asyncio.StreamReader
    up_writer: asyncio.StreamWriter
    trip_on_reply: _Trip | None = None
    brpop: bool = False  # the last command sent was a BRPOP
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for w in (self.writer, self.up_writer):
            with contextlib.suppress(Exception):
                w.close()
        for t in self.tasks:
            t.cancel()


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.latency_s = 0.0
        self.tripped_at: float | None = None
        self.tripped = threading.Event()
        self.trip_errors: list[str] = []
        #: Replies dropped by an ``every`` trip: (time, the reply's bytes).
        self.dropped: list[tuple[float, bytes]] = []
        #: Matching replies an ``every`` trip has seen (dropped or not).
        self.replies_seen = 0
        self.tap: Callable[[bytes], None] | None = None
        self._down_until = 0.0
        self._trip: _Trip | None = None
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def arm(
        self,
        pattern: bytes,
        *,
        action: str,
        outage_s: float = 0.0,
        on_trip: Callable[[], None] | None = None,
        reply_prefix: bytes = b"",
        reply_contains: bytes = b"",
        nth: int = 1,
        every: int = 0,
    ) -> None:
        if every and action != "cut_on_reply":
            raise ValueError("every= works with action='cut_on_reply' only")
        self.tripped.clear()
        self.tripped_at = None
        self._trip = _Trip(
            pattern, action, outage_s, on_trip, reply_prefix, reply_contains, nth, every
        )

    def disarm(self) -> None:
        self._trip = None
        for conn in list(self._conns):
            conn.trip_on_reply = None

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    # -- inside the proxy's event loop -------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        conn = _Conn(reader, writer, up_reader, up_writer)
        self._conns.add(conn)
        queue: _Line = asyncio.Queue()
        conn.tasks = [
            asyncio.create_task(self._from_client(conn, queue)),
            asyncio.create_task(self._to_redis(conn, queue)),
            asyncio.create_task(self._from_redis(conn)),
        ]
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        conn.close()
        self._conns.discard(conn)

    async def _outage(self, trip: _Trip) -> None:
        self._down_until = time.monotonic() + trip.outage_s
        if self._server is not None:
            self._server.close()
        self._fire(trip)
        for other in list(self._conns):
            other.close()
        asyncio.get_running_loop().call_later(
            trip.outage_s, lambda: asyncio.ensure_future(self._listen())
        )

    def _fire(self, trip: _Trip) -> None:
        self.tripped_at = time.time()
        if trip.on_trip is not None:
            try:
                trip.on_trip()
            except Exception as exc:
                self.trip_errors.append(repr(exc))
        self.tripped.set()

    async def _from_client(self, conn: _Conn, queue: _Line) -> None:
        loop = asyncio.get_running_loop()
        while data := await conn.reader.read(65536):
            conn.brpop = BRPOP in data
            trip = self._trip
            if trip is not None and trip.pattern in data:
                if trip.action == "outage":
                    self._trip = None
                    await self._outage(trip)
                    return
                if trip.action == "after_reply":
                    self._trip = None
                conn.trip_on_reply = trip
            await queue.put((loop.time() + self.latency_s, data))
        await queue.put(None)

    async def _to_redis(self, conn: _Conn, queue: _Line) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, data = item
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            conn.up_writer.write(data)
            await conn.up_writer.drain()

    async def _from_redis(self, conn: _Conn) -> None:
        while data := await conn.up_reader.read(65536):
            if self.tap is not None and conn.brpop and data.startswith(b"*2\r\n"):
                try:
                    self.tap(data)
                except Exception as exc:
                    self.trip_errors.append(repr(exc))
            trip = conn.trip_on_reply
            if (
                trip is not None
                and data.startswith(trip.reply_prefix)
                and trip.reply_contains in data
            ):
                conn.trip_on_reply = None
                if trip.every:
                    trip.seen += 1
                    self.replies_seen += 1
                    if self._trip is trip and trip.seen % trip.every == 0:
                        self.dropped.append((time.time(), data))
                        self._fire(trip)
                        conn.close()
                        return
                    conn.writer.write(data)
                    await conn.writer.drain()
                    continue
                trip.nth -= 1
                if trip.nth > 0:
                    conn.trip_on_reply = trip  # not this one yet
                elif trip.action == "after_reply":
                    self._fire(trip)
                elif self._trip is trip:  # the first connection to get such a reply trips it
                    self._trip = None
                    if trip.action == "outage_on_reply":
                        await self._outage(trip)
                    else:  # "cut_on_reply": this connection only
                        self._fire(trip)
                        conn.close()
                    return
            conn.writer.write(data)
            await conn.writer.drain()


@contextlib.contextmanager
def redis_proxy(cluster: Cluster) -> Iterator[Proxy]:
    """A proxy in front of the cluster's redis-server, stopped at the end."""
    assert cluster.redis_server is not None
    proxy = Proxy(cluster.redis_server.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
