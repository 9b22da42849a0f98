"""kombu's Redis transport with one fix: a lost broker connection no longer stops the worker.

When a worker loses its broker connection, Celery 5.7 collects the connection (the transport's
client is cleared) and starts a new one; the old channel is still asked to restore the messages
it holds, and tasks that finish later still acknowledge through it. Both need the client that is
gone: kombu raises ``AttributeError: 'NoneType' object has no attribute ...`` and the worker exits
with "Unrecoverable error" (docs/reliability.md, bug 2; `make chaos` 8a, 8b, 9a, 9b).

Nothing is lost by skipping those calls: the messages are still in kombu's unacknowledged set in
Redis and any worker restores them after the visibility timeout; a message that is delivered
again after it was handled is a no-op (done markers). So on a channel whose connection is gone,
this transport skips the restore and the acknowledgement, and the worker carries on with its new
connection instead of exiting.

:func:`broker_settings` puts it under ``redis://`` and ``rediss://`` (TLS) broker URLs alike.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kombu.transport import redis as kombu_redis

log = logging.getLogger("uphooks.worker")

TRANSPORT = f"{__name__}:Transport"


def broker_settings(url: str) -> dict[str, Any]:
    """Celery settings that run a ``redis://`` or ``rediss://`` broker on this transport.

    Other schemes (``sentinel://``, ``socket://``) keep kombu's own transport. For ``rediss://``
    kombu passes the URL's ``ssl_*`` options (``ssl_cert_reqs``, ``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``) to redis-py, whatever the
    transport. Its default for a URL without them is tied to the scheme's name, which naming a
    transport replaces: the connection would not use TLS at all. So that case gets redis-py's
    own default, as the ingress and the CLI do: TLS, the server checked against the system's CAs.
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "redis":
        return {"broker_transport": TRANSPORT}
    if scheme != "rediss":
        return {}
    options = {name for name, _ in parse_qsl(urlsplit(url).query) if name.startswith("ssl_")}
    if options:
        return {"broker_transport": TRANSPORT}
    return {"broker_transport": TRANSPORT, "broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}


class QoS(kombu_redis.QoS):
    def _connection_gone(self) -> bool:
        transport = getattr(self.channel, "connection", None)
        return getattr(transport, "client", None) is None

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        if self._connection_gone():
            return None
        return super().restore_unacked_once(stderr)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: Any) -> None:
        if self._connection_gone():
            log.warning(
                "message %s not acknowledged: its broker connection was lost; it is restored "
                "after the visibility timeout and then skipped (done markers)",
                delivery_tag,
            )
            return
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self._connection_gone():
            log.warning(
                "message %s not rejected: its broker connection was lost; it is restored after "
                "the visibility timeout",
                delivery_tag,
            )
            return
        super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
