"""Acknowledged means replicated (``UPHOOKS_ACK_REPLICAS=N``): wait for N replicas after a batch.

Redis replicates asynchronously: a delivery the master has kept can be lost with the master if a
replica is promoted before it got it. With N > 0 the Enqueuer follows each batch's script, on the
same connection, with ``WAITAOF 0 N timeout`` where the server has it (Redis 7.2+: N replicas
wrote it to their append-only file) or ``WAIT N timeout`` (7.0: N replicas received it). Fewer
than N in time raises :class:`NotReplicated`, which the ingress answers 503: the sender retries,
and the retry is answered 2xx (``duplicate``) once the replicas have it.

``WAITAOF`` counts replicas whose own append-only file has the write, so with Redis 7.2+ the
replicas need ``appendonly yes``; otherwise every delivery times out (the 503 says so).
"""

from __future__ import annotations

from redis.asyncio.connection import AbstractConnection


class NotReplicated(TimeoutError):
    """Fewer replicas than ``UPHOOKS_ACK_REPLICAS`` confirmed a batch in time."""


class ReplicaWait:
    """The wait command for one connection: detected once per connection, then packed args."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        #: None until detected on the current connection; then True if WAITAOF exists.
        self.waitaof: bool | None = None

    def forget(self) -> None:
        """A new connection may reach another server (a failover): detect again."""
        self.waitaof = None

    async def detect(self, conn: AbstractConnection) -> None:
        if self.waitaof is not None:
            return
        await conn.send_command("COMMAND", "INFO", "WAITAOF", check_health=False)
        reply = await conn.read_response()
        self.waitaof = bool(reply and reply[0])

    def command(self, timeout_ms: int) -> tuple[str | int, ...]:
        # Never 0: to WAIT, 0 means block for ever.
        timeout_ms = max(1, timeout_ms)
        if self.waitaof:
            return ("WAITAOF", 0, self.replicas, timeout_ms)
        return ("WAIT", self.replicas, timeout_ms)

    def check(self, reply: object) -> None:
        confirmed = int(reply[1]) if isinstance(reply, list) else int(str(reply))
        if confirmed < self.replicas:
            how = "WAITAOF (replicas need appendonly yes)" if self.waitaof else "WAIT"
            raise NotReplicated(
                f"{confirmed} of the {self.replicas} replica(s) UPHOOKS_ACK_REPLICAS asks for "
                f"confirmed the delivery in time ({how}); the sender will retry"
            )
