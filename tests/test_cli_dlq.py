"""`uphooks dlq` against a real Redis: list with filters, show, replay by filter, purge."""

from __future__ import annotations

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


def test_replay_by_filter_schedules_a_new_generation_of_each_entrys_pair_only(
    stack: Stack,
) -> None:
    seed(stack)
    stack.client().delete(f"{stack.prefix}:delivery:k0")  # the delivery expired meanwhile
    result = stack.cli("dlq", "replay", "--event", "upload_completed")
    assert result.returncode == 0, result.stderr
    assert "replayed 2" in result.stdout
    # Due now in the ledger's schedule, for that handler alone, with a new token; any worker's
    # scheduler publishes it (tests/test_ledger.py runs one end to end).
    r = stack.client()
    due = sorted(m.decode() for m in r.zrange(f"{stack.prefix}:due", 0, -1))
    assert due == ["k0|team.notify", "k1|team.archive"]
    for key, handler in (("k0", "team.notify"), ("k1", "team.archive")):
        handled = r.hgetall(f"{stack.prefix}:handled:{key}")
        assert handled[handler.encode()] == b"queued"
        assert handled[f"{handler}#".encode()] == b"1.1"
    # The delivery record is put back so the worker can read it, and the entries are gone.
    assert stack.client().exists(f"{stack.prefix}:delivery:k0")
    assert ids(stack.cli("dlq", "ls", "--json")) == ["k2|team.notify"]
