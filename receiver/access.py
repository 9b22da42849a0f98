"""The access log: one line per request, written by the app.

``uphooks serve`` turns uvicorn's own access line off (receiver/connections.py) and the app writes
this one instead, which costs a third of it (docs/performance.md): the record is built directly
(no caller lookup), and for a delivery the same line is also the first line of its trail, with
its key and event, where there used to be two lines (uvicorn's, and ours naming the key).

Wording: uvicorn's (``127.0.0.1:5000 - "POST /webhooks/upload-post HTTP/1.1" 202 Accepted``),
after ``<event> accepted`` (or ``duplicate, already kept``) for a delivery, whose key goes as
context (``extra``), which the formatters write out as ``[<key>]`` and the JSON field ``key``
(uphooks/logs.py). Fields: ``client``, ``method``, ``path``, ``status``, and ``event`` for a
delivery. A path token shows as ``***``. Logger ``uphooks.access``, level INFO.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uphooks.logs import DeliveryLine, JsonFormatter, TurnHandler

log = logging.getLogger("uphooks.access")

_PHRASES = {s.value: " " + s.phrase for s in HTTPStatus}
_LINE = '%s - "%s %s HTTP/%s" %d%s'
_DELIVERY_LINE = "%s %s (" + _LINE + ")"
#: Where the webhook route puts what it kept, for the access line: (key, event, is_new).
DELIVERY = "uphooks.delivery"

# Every attribute a record has, made once; a line copies it and sets what differs. Building a
# LogRecord the usual way (caller, thread, process names) cost as much as the rest of the line.
_TEMPLATE = logging.LogRecord(log.name, logging.INFO, __file__, 0, "", (), None).__dict__


def _record(msg: str, args: tuple[Any, ...]) -> logging.LogRecord:
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(_TEMPLATE)
    now = time.time()
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0
    fields["relativeCreated"] = (now - _START) * 1000
    fields["msg"] = msg
    fields["args"] = args
    fields["process"] = os.getpid()
    fields["thread"] = threading.get_ident()
    return record


_START: float = logging._startTime  # type: ignore[attr-defined]


def _direct_handler() -> TurnHandler | None:
    """The handler a line of ``log`` reaches, when it is the only one, with nothing on the way
    that could change or stop the line (a filter, another handler) and the JSON formatter: a
    delivery's line is then made by :meth:`JsonFormatter.delivery_access_line`, the same text
    without a record or logging's handler chain (which cost as much as the rest of the line).
    Anything else (tests' handlers, the plain format, a filter) takes the usual way."""
    found: logging.Handler | None = None
    logger: logging.Logger | None = log
    while logger is not None:
        if logger.filters or logger.disabled:
            return None
        for handler in logger.handlers:
            if found is not None:
                return None
            found = handler
        logger = logger.parent if logger.propagate else None
    if (
        type(found) is TurnHandler
        and not found.filters
        and found.level <= logging.INFO
        and type(found.formatter) is JsonFormatter
    ):
        return found
    return None


class AccessLog:
    def __init__(self, token_prefix: str | None = None) -> None:
        #: ``<webhook path>/``: what follows it is a path token, never written out.
        self.token_prefix = token_prefix

    def write(self, scope: Scope, status: int) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else ""
        path = scope["path"]
        prefix = self.token_prefix
        if prefix is not None and path.startswith(prefix):
            path = prefix + "***"
        query = scope.get("query_string")
        if query:
            path += "?" + query.decode("ascii", "replace")
        method, version = scope["method"], scope["http_version"]
        line = (address, method, path, version, status, _PHRASES.get(status, ""))
        delivery = scope.get(DELIVERY)
        if delivery is None:
            record = _record(_LINE, line)
        else:
            key, event, is_new = delivery
            outcome = "accepted" if is_new else "duplicate, already kept"
            args = (event, outcome, *line)
            handler = _direct_handler()
            if handler is not None:
                made = DeliveryLine(
                    time.time(), log.name, _DELIVERY_LINE % args, os.getpid(), key, event,
                    address, method, path, status,
                )  # fmt: skip
                formatter = handler.formatter
                assert isinstance(formatter, JsonFormatter)
                handler.emit_line(
                    formatter.delivery_access_line(made), lambda: _record(_DELIVERY_LINE, args)
                )
                return
            record = _record(_DELIVERY_LINE, args)
            record.delivery_key = key
            record.key = key  # the older name of the context, read by formatters before it
            record.event = event
        record.client = address
        record.method = method
        record.path = path
        record.status = status
        log.handle(record)

    async def around(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` and write its line once it answered (a 500 when it raised before that,
        which the server then answers; no line for a client that went away unanswered)."""
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, sending)
        except BaseException:
            self.write(scope, status or 500)
            raise
        if status:
            self.write(scope, status)
