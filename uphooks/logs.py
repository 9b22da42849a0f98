"""Log lines of the ingress and the workers: JSON for log aggregation, plain for a terminal.

``UPHOOKS_LOG_FORMAT``: ``json`` (one object per line), ``plain``, or ``auto`` (plain when
stderr is a terminal, JSON otherwise).

One grep follows one delivery: the ingress logs the delivery key when it keeps a delivery, and
every line the worker writes about it (its own, and each handler's ``ctx.log``) carries it. The
context travels as record attributes, never inside the text: a caller passes
``extra={"delivery_key": ..., "handler": ...}`` (``ctx.log`` does it for handlers), and the
formatters write it out: in both formats the message starts with ``[<key>]`` or
``[<key> <handler>]``, and in JSON they are also the fields ``key`` and ``handler``, so
``jq 'select(.key == "d:...")'`` works as well as ``grep d:...``. ``extra={"key": ...}`` is
read as the delivery key too (its older name).

JSON fields: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, ``service`` (ingress or
worker), ``pid``, then when known ``key``, ``handler``, ``event``, ``exc`` (a traceback),
``handler_mismatch`` (workers of a queue loading different handlers) and, for uvicorn's access
lines, ``client``, ``method``, ``path`` and ``status``.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson

from uphooks.settings import Settings

# Transitional: lines that still write "[d:abc]" or "[e:0123 team.notify]" into their text
# (workers/ until it passes extra=) still get the JSON fields. Remove with the last such line.
_KEYED_TEXT = re.compile(r"^\[(?P<key>[de]:[A-Za-z0-9._:-]+)(?: (?P<handler>[^\]\s]+))?\]")
_EXTRA_FIELDS = ("handler", "event", "attempt", "handler_mismatch")
# receiver/access.py's access line (uvicorn's own gets them from its arguments, below).
_ACCESS_FIELDS = ("client", "method", "path", "status")
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _access_args(record: logging.LogRecord) -> tuple[Any, ...] | None:
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        return args
    return None


def delivery_key_of(record: logging.LogRecord) -> str | None:
    """The delivery a line is about, from ``extra={"delivery_key": ...}`` (or ``"key"``)."""
    key = getattr(record, "delivery_key", None) or getattr(record, "key", None)
    return None if key is None else str(key)


def message_of(record: logging.LogRecord) -> str:
    """The line's text, after ``[<key> <handler>]`` when it is about a delivery; uvicorn's
    access lines keep its wording, ``202 Accepted`` included."""
    args = _access_args(record)
    if args is None:
        key = delivery_key_of(record)
        if key is None:
            return record.getMessage()
        handler = getattr(record, "handler", None)
        context = f"{key} {handler}" if handler else key
        return f"[{context}] {record.getMessage()}"
    client, method, path, version, status = args
    try:
        phrase = " " + HTTPStatus(int(status)).phrase
    except ValueError:
        phrase = ""
    return f'{client} - "{method} {path} HTTP/{version}" {status}{phrase}'


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = message_of(record)  # "[key handler] " from extra= included, once
        return super().formatMessage(record)


def keyed_fields(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """The JSON fields of a line's context: the delivery key, handler, event, ..."""
    fields: dict[str, Any] = {}
    key = delivery_key_of(record)
    if key is not None:
        fields["key"] = key
    fields.update((name, getattr(record, name)) for name in _EXTRA_FIELDS if hasattr(record, name))
    if key is None:
        found = _KEYED_TEXT.match(message)
        if found:
            fields["key"] = found.group("key")
            if found.group("handler"):
                fields["handler"] = found.group("handler")
    return fields


def utc_millis(created: float) -> str:
    """``created`` (unix s) as ISO 8601 in UTC to the millisecond, as ``datetime.isoformat``
    writes it; the date and time of day are made once per second (a line a request: making them
    each time cost a third of the line)."""
    whole = int(created)
    micros = round((created - whole) * 1e6)  # datetime.fromtimestamp rounds to the microsecond
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if whole != _SECOND[0]:
        _SECOND[:] = [whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_SECOND[1]}.{micros // 1000:03d}+00:00"


_SECOND: list[Any] = [None, ""]


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    """An INFO access line about a delivery, as receiver/access.py writes it."""

    created: float
    logger: str
    message: str  # the text after "[<key>] "
    pid: int
    key: str
    event: str
    client: str
    method: str
    path: str
    status: int


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def delivery_access_line(self, line: DeliveryLine) -> str:
        """What :meth:`format` writes for receiver/access.py's line about a delivery, made
        without a record (the fields in the same order)."""
        data: dict[str, Any] = {
            "ts": utc_millis(line.created),
            "level": "INFO",
            "logger": line.logger,
            "msg": f"[{line.key}] {line.message}",
        }
        if self.service:
            data["service"] = self.service
        data["pid"] = line.pid
        data["key"] = line.key
        data["event"] = line.event
        data["client"] = line.client
        data["method"] = line.method
        data["path"] = line.path
        data["status"] = line.status
        return orjson.dumps(data, default=str).decode()

    def format(self, record: logging.LogRecord) -> str:
        message = message_of(record)
        data: dict[str, Any] = {
            "ts": utc_millis(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        if self.service:
            data["service"] = self.service
        data["pid"] = record.process
        data.update(keyed_fields(record, message))
        access = _access_args(record)
        if access is not None:
            data.update(client=access[0], method=access[1], path=access[2], status=access[4])
        else:
            data.update((n, getattr(record, n)) for n in _ACCESS_FIELDS if hasattr(record, n))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(data, default=str).decode()


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that holds the access lines (receiver/access.py) written on an event
    loop's thread until the end of that loop's turn, and writes them together: one ``write``
    for the lines of every request a turn answered, where each line cost a system call (the
    ingress writes one per request). Every other line goes out at once, after what is held: a
    server that stops (uvicorn re-raises SIGTERM once it is done, so no exit handler runs)
    logs its shutdown after its last answer, so nothing held is left behind; ``flush``
    (logging's shutdown calls it) writes what is held too."""

    #: The loggers whose lines are held: one line per request.
    held_loggers = frozenset({"uphooks.access"})

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held: list[str] = []
        self._last: logging.LogRecord | Callable[[], logging.LogRecord] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        loop = asyncio._get_running_loop()
        if (
            loop is None
            or record.name not in self.held_loggers
            or (self._held and loop is not self._loop)
        ):
            self._write()  # what a loop's thread holds goes first
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._hold(loop, line, record)

    def emit_line(self, line: str, record: Callable[[], logging.LogRecord]) -> None:
        """Write ``line``, already formatted (receiver/access.py's fast path), as :meth:`emit`
        would; ``record`` makes the record it stands for, should the write fail."""
        with self.lock:  # type: ignore[union-attr]
            loop = asyncio._get_running_loop()
            if loop is not None and (not self._held or loop is self._loop):
                self._hold(loop, line + self.terminator, record)
                return
            self._write()
            try:
                self.stream.write(line + self.terminator)
                self.stream.flush()
            except Exception:
                self.handleError(record())

    def _hold(
        self,
        loop: asyncio.AbstractEventLoop,
        line: str,
        record: logging.LogRecord | Callable[[], logging.LogRecord],
    ) -> None:
        if not self._held:
            self._loop = loop
            loop.call_soon(self._write_held)
        self._held.append(line)
        self._last = record

    def _write_held(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if not self._held:
            return
        lines, self._held = "".join(self._held), []
        try:
            self.stream.write(lines)
            self.stream.flush()
        except Exception:
            last = self._last
            if last is not None:
                self.handleError(last if isinstance(last, logging.LogRecord) else last())

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()
        super().flush()


def wants_json(settings: Settings, stream: Any = None) -> bool:
    if settings.log_format != "auto":
        return settings.log_format == "json"
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def formatter(settings: Settings, service: str) -> logging.Formatter:
    if wants_json(settings):
        return JsonFormatter(service)
    return PlainFormatter()


def _make_formatter(fmt: str, service: str) -> logging.Formatter:
    """dictConfig factory (uvicorn builds its formatters from a dict)."""
    return JsonFormatter(service) if fmt == "json" else PlainFormatter()


def dict_config(settings: Settings, service: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: everything to stderr in the chosen format.

    For the ingress pass it to uvicorn (``uvicorn.run(..., log_config=...)``), which applies it
    in every process it starts; uvicorn's own loggers then write through the same handler.
    """
    level = settings.log_level.upper()
    passthrough = {"handlers": [], "propagate": True, "level": level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "uphooks": {
                "()": f"{__name__}._make_formatter",
                "fmt": "json" if wants_json(settings) else "plain",
                "service": service,
            }
        },
        "handlers": {
            "stderr": {
                "class": f"{__name__}.TurnHandler",
                "formatter": "uphooks",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": passthrough,
            "uvicorn.error": passthrough,
            "uvicorn.access": passthrough,
        },
    }


def configure(settings: Settings, service: str, *, capture_warnings: bool = False) -> None:
    """Apply :func:`dict_config` to this process (the worker; uvicorn does it for the ingress).

    ``capture_warnings`` sends Python warnings (Celery's running-as-root one) through the same
    handler, so a JSON log holds no plain-text lines of ours."""
    logging.config.dictConfig(dict_config(settings, service))
    if capture_warnings:
        logging.captureWarnings(True)


def delivery_kept(log: logging.Logger, key: str, event: str, is_new: bool) -> None:
    """The ingress's line for a delivery it acknowledged: the first line of its trail."""
    log.info(
        "%s %s",
        event,
        "accepted" if is_new else "duplicate, already kept",
        extra={"delivery_key": key, "event": event},
    )
