"""Log lines: the delivery key and handler passed as ``extra`` and written out by the formatters
(in the text and as JSON fields), the format switch, and a real worker whose lines about one
delivery all carry its key."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, Stack, wait_for
from uphooks import logs
from uphooks.settings import Settings


def record(name: str, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_the_key_and_handler() -> None:
    fmt = logs.JsonFormatter("worker")
    context = {"delivery_key": "d:abc-1", "handler": "team.notify"}
    line = json.loads(fmt.format(record("uphooks.worker", "attempt %d failed", 2, **context)))
    assert line["msg"] == "[d:abc-1 team.notify] attempt 2 failed"
    assert (line["key"], line["handler"], line["level"]) == ("d:abc-1", "team.notify", "WARNING")
    assert line["service"] == "worker" and line["logger"] == "uphooks.worker"
    assert line["ts"].endswith("+00:00")
    plain_line = logs.PlainFormatter().format(record("uphooks.worker", "done", **context))
    assert plain_line.endswith("WARNING uphooks.worker: [d:abc-1 team.notify] done")

    only_key = json.loads(fmt.format(record("x", "stored delivery gone", delivery_key="e:0123")))
    assert only_key["msg"] == "[e:0123] stored delivery gone"
    assert only_key["key"] == "e:0123" and "handler" not in only_key
    # ``key`` is the older name of ``delivery_key`` in extra.
    extra = json.loads(fmt.format(record("x", "kept", key="d:k", event="upload_completed")))
    assert (extra["key"], extra["event"], extra["msg"]) == ("d:k", "upload_completed", "[d:k] kept")
    plain = json.loads(fmt.format(record("x", "[not a key] hello")))
    assert "key" not in plain and plain["msg"] == "[not a key] hello"
    # A line that still writes its context into the text (transitional) keeps its fields.
    legacy = json.loads(fmt.format(record("x", "[%s %s] done", "d:abc-1", "team.notify")))
    assert (legacy["key"], legacy["handler"]) == ("d:abc-1", "team.notify")
    assert legacy["msg"] == "[d:abc-1 team.notify] done"

    access = json.loads(
        fmt.format(
            record(
                "uvicorn.access",
                '%s - "%s %s HTTP/%s" %d',
                "127.0.0.1:5000",
                "POST",
                "/webhooks/upload-post",
                "1.1",
                202,
            )
        )
    )
    assert (access["method"], access["path"], access["status"]) == (
        "POST",
        "/webhooks/upload-post",
        202,
    )
    # uvicorn's own wording, in both formats.
    assert access["msg"] == '127.0.0.1:5000 - "POST /webhooks/upload-post HTTP/1.1" 202 Accepted'
    plain_access = logs.PlainFormatter().format(
        record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', "c", "GET", "/readyz", "1.1", 503)
    )
    assert plain_access.endswith(
        'uvicorn.access: c - "GET /readyz HTTP/1.1" 503 Service Unavailable'
    )
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("x", "failed")
        rec.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(fmt.format(rec))["exc"]


def test_a_handlers_ctx_log_passes_its_context_as_extra_beside_the_callers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from handlers.context import bound_logger

    with caplog.at_level(logging.INFO, logger="uphooks.handler"):
        bound_logger("d:k9", "team.crm").info("sent %s", "x", extra={"event": "upload_completed"})
    [rec] = caplog.records
    assert rec.getMessage() == "sent x"  # the text is the handler's own
    assert (rec.delivery_key, rec.handler, rec.event) == ("d:k9", "team.crm", "upload_completed")
    assert json.loads(logs.JsonFormatter().format(rec))["msg"] == "[d:k9 team.crm] sent x"


def test_the_ingress_line_for_a_kept_delivery_carries_its_key_as_extra(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("uphooks.receiver")
    with caplog.at_level(logging.INFO, logger="uphooks.receiver"):
        logs.delivery_kept(log, "d:k1", "upload_completed", is_new=True)
    [rec] = caplog.records
    assert (rec.getMessage(), rec.delivery_key) == ("upload_completed accepted", "d:k1")
    line = json.loads(logs.JsonFormatter("ingress").format(rec))
    assert (line["msg"], line["key"]) == ("[d:k1] upload_completed accepted", "d:k1")


@pytest.mark.parametrize(("fmt", "is_json"), [("json", True), ("plain", False), ("auto", True)])
def test_the_format_setting_applies_to_the_whole_process(fmt: str, is_json: bool) -> None:
    script = textwrap.dedent(
        """
        import logging
        from uphooks import logs
        from uphooks.settings import Settings
        logs.configure(Settings(log_format=sys.argv[1]), "worker")
        extra = {"delivery_key": "d:k1", "handler": "h1"}
        logging.getLogger("uphooks.worker").info("done", extra=extra)
        logging.getLogger("celery").debug("not shown at INFO")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", "import sys\n" + script, fmt],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    (line,) = result.stderr.splitlines()  # stderr is a pipe here, so auto means JSON
    if is_json:
        assert json.loads(line)["key"] == "d:k1"
    else:
        assert line.endswith("INFO    uphooks.worker: [d:k1 h1] done")


def test_uvicorn_gets_the_same_format() -> None:
    config = logs.dict_config(Settings(log_format="json", log_level="debug"), "ingress")
    assert config["root"]["level"] == "DEBUG"
    assert config["formatters"]["uphooks"]["fmt"] == "json"
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name]["propagate"] is True


def test_one_grep_follows_a_delivery_through_a_real_worker(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="none")
    worker = stack.worker(
        "tests.plugins.jsonlogs,tests.plugins.recording", UPHOOKS_LOG_FORMAT="json"
    )
    stack.client().set(f"{stack.prefix}:test:ctl:fail_times", 1)  # test.flaky fails once
    body = (ROOT / "tests" / "fixtures" / "upload_completed.json").read_bytes()
    key = ingress.post(body).json()["idempotency_key"]
    effects = f"{stack.prefix}:test:effects"
    wait_for(
        lambda: any(b"test.flaky" in e for e in stack.client().lrange(effects, 0, -1)),
        timeout=30,
        what="the retried handler",
    )
    lines = [json.loads(x) for x in worker.log.read_text().splitlines() if x.startswith("{")]
    about = [line for line in lines if key in line["msg"]]
    assert about, "no worker line names the delivery"
    assert all(line.get("key") == key for line in about)
    assert any(line["logger"] == "uphooks.events" for line in about)  # the built-in log handler
    assert any(
        line.get("handler") == "test.flaky" and "attempt 1 failed" in line["msg"] for line in about
    )


def test_json_timestamps_match_datetime_to_the_millisecond_across_second_edges() -> None:
    from datetime import UTC, datetime

    for at in (1764621234.0, 1764621234.0004999, 1764621234.9994999, 1764621234.9999996, 0.5):
        expected = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
        assert logs.utc_millis(at) == expected


class _Writes:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_access_lines_of_one_loop_turn_go_out_in_one_write_after_it() -> None:
    import asyncio

    stream = _Writes()
    handler = logs.TurnHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))

    async def one_turn() -> list[str]:
        for n in range(3):
            handler.handle(record("uphooks.access", "line %d", n))
        held = list(stream.writes)
        await asyncio.sleep(0)  # the turn ends
        await asyncio.sleep(0)
        return held

    assert asyncio.run(one_turn()) == []
    assert stream.writes == ["line 0\nline 1\nline 2\n"]

    handler.handle(record("uphooks.worker", "no loop here"))  # written at once
    assert stream.writes[-1] == "no loop here\n"

    async def held_then_flushed() -> None:
        handler.handle(record("uphooks.access", "before shutdown"))
        handler.flush()  # logging.shutdown flushes every handler
        assert stream.writes[-1] == "before shutdown\n"

    asyncio.run(held_then_flushed())

    async def other_lines_at_once() -> None:
        # A server's own lines (its shutdown, say) go out at once, after the access lines held.
        handler.handle(record("uphooks.access", "last answer"))
        handler.handle(record("uvicorn.error", "Application shutdown complete."))
        assert stream.writes[-2:] == ["last answer\n", "Application shutdown complete.\n"]

    asyncio.run(other_lines_at_once())
