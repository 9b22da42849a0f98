"""A worker's start-up under JSON logging: every line is JSON (no banner, no plain warnings), and
the lines written while the handlers load, before Celery sets up logging, are there."""

from __future__ import annotations

import json

from tests.conftest import Stack

RECORDING = "tests.plugins.recording"


def test_a_json_worker_starts_up_in_json_lines_and_names_its_handlers(stack: Stack) -> None:
    worker = stack.worker(RECORDING, "-c", "1", UPHOOKS_LOG_FORMAT="json")
    lines = [line for line in worker.log.read_text(errors="replace").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # a plain line would fail here
    messages = [r["msg"] for r in records]
    handlers = next(m for m in messages if m.startswith("handlers: "))
    assert {"test.any", "test.steady", "uphooks.log"} <= set(handlers[10:].split(", "))
    assert any(m.endswith(" ready.") for m in messages)
    heartbeat = next(m for m in messages if m.startswith("heartbeat: "))
    assert f"queues {stack.queue}" in heartbeat and "test.any" in heartbeat
    assert all(r["service"] == "worker" for r in records)
