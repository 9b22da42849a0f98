"""`uphooks dlq` against a real Redis: list with filters, show, replay by filter, purge."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import orjson

from tests.conftest import Stack
from uphooks.keys import Keys
from workers.deadletter import DeadLetter, DeadLetters


def seed(stack: Stack) -> None:
    store = DeadLetters(stack.client(), Keys(stack.prefix), 3600)
    for i, (event, handler, platform) in enumerate(
        [
            ("upload_completed", "team.notify", "tiktok"),
            ("upload_completed", "team.archive", "instagram"),
            ("social_account_disconnected", "team.notify", "x"),
        ]
    ):
        body = json.dumps({"event": event, "platform": platform})
        record = orjson.dumps({"key": f"k{i}", "event": event, "received_at": 1.0, "body": body})
        store.add(
            DeadLetter(
                key=f"k{i}",
                handler=handler,
                event=event,
                attempts=3,
                error="ValueError('x')",
                traceback="Traceback ...",
                first_received_at=1.0,
                dead_at=time.time() + i,
                record=record.decode(),
            )
        )


def ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [row["id"] for row in json.loads(result.stdout)]


def test_list_filters_show_and_purge(stack: Stack) -> None:
    seed(stack)
    assert ids(stack.cli("dlq", "ls", "--json")) == [
        "k0|team.notify",
        "k1|team.archive",
        "k2|team.notify",
    ]
    assert ids(stack.cli("dlq", "ls", "--json", "--event", "upload_completed")) == [
        "k0|team.notify",
        "k1|team.archive",
    ]
    assert ids(stack.cli("dlq", "ls", "--json", "--handler", "*.notify")) == [
        "k0|team.notify",
        "k2|team.notify",
    ]
    assert ids(stack.cli("dlq", "ls", "--json", "--platform", "instagram")) == ["k1|team.archive"]

    shown = stack.cli("dlq", "show", "k1|team.archive")
    assert shown.returncode == 0 and "Traceback ..." in shown.stdout
    assert "first_received_at: 1970-01-01 00:00:01Z (1)" in shown.stdout  # times a human reads
    missing = stack.cli("dlq", "show", "nope")
    assert missing.returncode != 0 and "uphooks dlq ls" in missing.stderr

    refused = stack.cli("dlq", "purge", "--yes")
    assert refused.returncode != 0 and "--all" in refused.stderr
    purged = stack.cli("dlq", "purge", "--handler", "*.notify", "--yes")
    assert "purged 2" in purged.stdout
    assert ids(stack.cli("dlq", "ls", "--json")) == ["k1|team.archive"]


def test_replay_by_filter_publishes_one_message_per_entry_for_its_handler_only(
    stack: Stack,
) -> None:
    seed(stack)
    stack.client().delete(f"{stack.prefix}:delivery:k0")  # the delivery expired meanwhile
    result = stack.cli("dlq", "replay", "--event", "upload_completed")
    assert result.returncode == 0, result.stderr
    assert "replayed 2" in result.stdout
    messages = [json.loads(m) for m in stack.client().lrange(stack.queue, 0, -1)]
    bodies = [json.loads(base64.b64decode(m["body"])) for m in messages]
    calls = sorted((body[0][0][0], body[1]["only"]) for body in bodies)
    assert calls == [("k0", ["team.notify"]), ("k1", ["team.archive"])]
    # The delivery record is put back so the worker can read it, and the entries are gone.
    assert stack.client().exists(f"{stack.prefix}:delivery:k0")
    assert ids(stack.cli("dlq", "ls", "--json")) == ["k2|team.notify"]
