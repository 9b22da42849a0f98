"""The ingress's own access line (receiver/access.py) and its one-write answers
(receiver/connections.py): what they write, in both log formats, and what reaches the socket."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from receiver.access import DELIVERY, AccessLog
from receiver.connections import CoalescingTransport
from uphooks import logs


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Any:
    handler = Capture()
    logger = logging.getLogger("uphooks.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def scope(path: str, **extra: Any) -> dict[str, Any]:
    base = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "http_version": "1.1",
        "client": ("203.0.113.7", 5000),
    }
    return base | extra


def test_a_delivery_is_one_line_with_its_key_in_both_formats(captured: Any) -> None:
    AccessLog().write(
        scope("/webhooks/upload-post", **{DELIVERY: ("e:k1", "upload_completed", True)}), 202
    )
    (record,) = captured
    line = json.loads(logs.JsonFormatter("ingress").format(record))
    assert line["msg"] == (
        '[e:k1] upload_completed accepted (203.0.113.7:5000 - "POST /webhooks/upload-post '
        'HTTP/1.1" 202 Accepted)'
    )
    assert (line["key"], line["event"], line["status"], line["method"]) == (
        "e:k1",
        "upload_completed",
        202,
        "POST",
    )
    assert (line["client"], line["path"], line["logger"]) == (
        "203.0.113.7:5000",
        "/webhooks/upload-post",
        "uphooks.access",
    )
    plain = logs.PlainFormatter().format(record)
    assert plain.endswith(
        "uphooks.access: [e:k1] upload_completed accepted (203.0.113.7:5000 - "
        '"POST /webhooks/upload-post HTTP/1.1" 202 Accepted)'
    )


def test_other_requests_keep_uvicorns_wording_and_a_path_token_is_hidden(captured: Any) -> None:
    access = AccessLog("/webhooks/upload-post/")
    access.write(scope("/webhooks/upload-post/tok_secret", **{DELIVERY: ("e:k2", "x", False)}), 200)
    access.write(scope("/healthz", method="GET", query_string=b"a=1"), 200)
    first, second = (logs.PlainFormatter().format(r) for r in captured)
    assert "tok_secret" not in first
    assert first.endswith(
        'duplicate, already kept (203.0.113.7:5000 - "POST '
        '/webhooks/upload-post/*** HTTP/1.1" 200 OK)'
    )
    assert second.endswith('uphooks.access: 203.0.113.7:5000 - "GET /healthz?a=1 HTTP/1.1" 200 OK')


def test_nothing_is_built_below_info(captured: Any) -> None:
    logging.getLogger("uphooks.access").setLevel(logging.WARNING)
    AccessLog().write(scope("/healthz"), 200)
    assert captured == []


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_an_answer_leaves_in_one_write_and_nothing_held_is_lost() -> None:
    async def scenario() -> Recorder:
        raw = Recorder()
        transport = CoalescingTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
        assert raw.writes == []  # held: the body follows in the same turn
        transport.write(b'{"status":"accepted"}')
        assert raw.writes == [b'HTTP/1.1 202 Accepted\r\n\r\n{"status":"accepted"}']
        transport.write(b"lonely")  # nothing follows: sent at the end of this turn
        await asyncio.sleep(0)
        assert raw.writes[-1] == b"lonely"
        transport.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        transport.close()  # what is held goes out before the close
        assert raw.writes[-1].startswith(b"HTTP/1.1 408") and raw.closed
        assert transport.get_extra_info("peername") == "info:peername"
        return raw

    raw = asyncio.run(scenario())
    assert len(raw.writes) == 3


def test_a_deliverys_line_made_without_a_record_is_the_json_formatters_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import re

    from receiver.access import _direct_handler

    stream = io.StringIO()
    handler = logs.TurnHandler(stream)
    handler.setFormatter(logs.JsonFormatter("ingress"))
    logger = logging.getLogger("uphooks.access")
    monkeypatch.setattr(logger, "propagate", False)  # the ingress's set-up: one handler in all
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(handler)
    try:
        assert _direct_handler() is handler
        kept = scope("/webhooks/upload-post", **{DELIVERY: ("e:k1", "upload_completed", False)})

        async def in_a_loop() -> str:
            AccessLog().write(kept, 200)
            held = stream.getvalue()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return held

        assert asyncio.run(in_a_loop()) == ""  # held until the loop's turn ended
        capture = Capture()  # a second handler: the usual way, through a record
        logger.addHandler(capture)
        assert _direct_handler() is None
        AccessLog().write(kept, 200)
        logger.removeHandler(capture)
    finally:
        logger.removeHandler(handler)
    direct, usual = (json.loads(line) for line in stream.getvalue().splitlines())
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
    assert stamp.match(direct.pop("ts")) and stamp.match(usual.pop("ts"))
    assert direct == usual
    assert list(direct) == list(usual)  # the same fields in the same order
    assert direct["msg"] == (
        '[e:k1] upload_completed duplicate, already kept (203.0.113.7:5000 - "POST '
        '/webhooks/upload-post HTTP/1.1" 200 OK)'
    )
