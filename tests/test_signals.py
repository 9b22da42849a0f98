"""SIGTERM, as Kubernetes, Docker and systemd send it, to real ingress and worker processes.

Ingress: it stops accepting, finishes the requests in flight, then exits; a delivery it answered
2xx is in Redis. Worker: a running handler finishes (warm shutdown); a retry waiting in the worker
goes back to the queue; a new worker then gives every event exactly one effect.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from tests.conftest import PATH, Stack, fixture_bodies, wait_for

KILLABLE = "tests.plugins.killable"
SLOWISH = "tests.plugins.slowish"
# The tests post unsigned bodies; signature checks are tested elsewhere.
UNSIGNED = {"UPHOOKS_VERIFY": "none"}
NO_LOG_HANDLER = {"UPHOOKS_BUILTIN_LOG_HANDLER": "false"}
# tests/plugins/slowish.py's retry delay (not imported: importing registers its handler here).
RETRY_AFTER = 10.0


def _effects(stack: Stack) -> Counter[str]:
    raw = stack.client().lrange(f"{stack.prefix}:test:effects", 0, -1)
    return Counter(item.decode() for item in raw)


def _test_key(stack: Stack, name: str) -> str:
    return f"{stack.prefix}:test:{name}"


def _refuses_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def _read_head(sock: socket.socket) -> bytes:
    """One response head (status line and headers), read byte by byte so nothing after it is
    consumed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed before a response: {head!r}"
        head += byte
    return head


def _read_response(sock: socket.socket) -> tuple[int, dict[str, object]]:
    head = _read_head(sock)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "connection closed in the middle of the response body"
        body += chunk
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_ingress_sigterm_stops_accepting_finishes_the_request_in_flight_and_keeps_it(
    stack: Stack,
) -> None:
    ingress = stack.ingress(**UNSIGNED)
    url = urlsplit(ingress.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = fixture_bodies()["upload_completed.json"]

    with socket.create_connection((host, port), timeout=15) as sock:
        # A delivery in flight: uvicorn answers "100 Continue" when the app starts reading the
        # body, so the request is inside the app when the signal arrives.
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        interim = _read_head(sock)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        ingress.proc.send_signal(signal.SIGTERM)

        wait_for(lambda: _refuses_connections(host, port), timeout=10, what="listener closed")
        assert ingress.proc.poll() is None, "the ingress exited with a request in flight"

        sock.sendall(body)
        status, answer = _read_response(sock)

    assert status == 202, answer
    # uvicorn re-raises the signal once it is done: "killed by SIGTERM", after a clean shutdown.
    assert ingress.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    log = next(stack.tmp.glob(f"ingress-{port}.log")).read_text()
    assert log.index("Shutting down") < log.index("202 Accepted")
    assert "Application shutdown complete" in log
    key = str(answer["idempotency_key"])
    client = stack.client()
    record = client.get(f"{stack.prefix}:delivery:{key}")
    assert record is not None, "a delivery answered 202 is not in Redis"
    assert json.loads(record)["body"] == body.decode()
    queued = client.lrange(stack.queue, 0, -1)
    assert len(queued) == 1 and key.encode() in queued[0], "its Celery message is not queued"


def test_worker_sigterm_mid_handler_lets_it_finish_and_a_new_worker_does_not_repeat_it(
    stack: Stack,
) -> None:
    client = stack.client()
    client.set(_test_key(stack, "ctl:hold_before"), 1)
    ingress = stack.ingress(**UNSIGNED)
    first = stack.worker(KILLABLE, **NO_LOG_HANDLER)
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]
    wait_for(lambda: client.exists(_test_key(stack, "running:hold_before")), what="handler runs")

    # What Kubernetes, `docker stop` and systemd (KillMode=mixed) do: SIGTERM to the main process.
    first.proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    assert first.proc.poll() is None, "the worker did not wait for its running handler"
    assert not _effects(stack), "the handler cannot have had its effect yet"

    client.delete(_test_key(stack, "ctl:hold_before"))  # the handler goes on, and finishes
    assert first.proc.wait(timeout=30) == 0
    pair = f"{key}:test.killable"
    assert _effects(stack) == Counter({f"test.killable|{pair}": 1})
    assert client.hget(f"{stack.prefix}:handled:{key}", "test.killable") == b"done"
    assert client.llen(stack.queue) == 0

    # A new worker finds nothing of it left to do: a later delivery is handled, that one is not.
    stack.worker(KILLABLE, **NO_LOG_HANDLER)
    body = json.loads(fixture_bodies()["upload_completed.json"])
    body["platform"] = "later"
    later = ingress.post(json.dumps(body)).json()["idempotency_key"]
    wait_for(lambda: f"test.killable|{later}:test.killable" in _effects(stack), what="later one")
    assert _effects(stack)[f"test.killable|{pair}"] == 1
    assert client.get(_test_key(stack, f"runs:{pair}")) == b"1", "the handler ran twice"


def test_worker_sigterm_with_a_retry_waiting_exits_at_once_and_the_retry_runs_once_later(
    stack: Stack,
) -> None:
    client = stack.client()
    ingress = stack.ingress(**UNSIGNED)
    first = stack.worker(SLOWISH, **NO_LOG_HANDLER)
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]
    pair = f"{key}:test.retry_later"
    attempts = _test_key(stack, f"attempts:{pair}")

    # Attempt 1 failed; its retry (due RETRY_AFTER later) waits in Redis, not in the worker.
    handled = f"{stack.prefix}:handled:{key}"
    wait_for(
        lambda: client.get(attempts) == b"1" and client.hget(handled, "test.retry_later"),
        what="first attempt failed",
    )
    wait_for(lambda: client.hget(handled, "test.retry_later") == b"retrying", what="scheduled")
    failed = time.monotonic()
    time.sleep(0.5)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    assert time.monotonic() - failed < RETRY_AFTER, "the worker waited for the retry to be due"

    # The retry is in the ledger's schedule, not stranded in a worker.
    assert client.llen(stack.queue) == 0
    assert client.zscore(f"{stack.prefix}:due", f"{key}|test.retry_later") is not None
    assert not _effects(stack)

    stack.worker(SLOWISH, **NO_LOG_HANDLER)
    wait_for(lambda: _effects(stack), timeout=30, what="the retry ran on the new worker")
    time.sleep(0.5)
    assert _effects(stack) == Counter({f"test.retry_later|{pair}": 1})
    assert client.get(attempts) == b"2"
    stack.wait_settled(key, {"test.retry_later": "done"})


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_sigterm_to_every_worker_process_kills_the_handler_and_its_event_runs_once_later(
    stack: Stack,
) -> None:
    """What systemd's default KillMode=control-group does (deploy/systemd uses mixed): the pool
    child dies mid-handler; the event goes back to the queue and runs once, on a new worker."""
    client = stack.client()
    client.set(_test_key(stack, "ctl:hold_before"), 1)
    ingress = stack.ingress(**UNSIGNED)
    first = stack.worker(KILLABLE, **NO_LOG_HANDLER)
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]
    wait_for(lambda: client.exists(_test_key(stack, "running:hold_before")), what="handler runs")

    os.killpg(first.proc.pid, signal.SIGTERM)
    first.proc.wait(timeout=30)
    assert not _effects(stack)
    client.delete(_test_key(stack, "ctl:hold_before"))

    stack.worker(KILLABLE, **NO_LOG_HANDLER)
    pair = f"{key}:test.killable"
    wait_for(lambda: _effects(stack), timeout=30, what="the event ran again on the new worker")
    time.sleep(0.5)
    assert _effects(stack) == Counter({f"test.killable|{pair}": 1})
    assert client.get(_test_key(stack, f"runs:{pair}")) == b"2"
