"""`uphooks events ls|show` on a real Redis: deliveries kept by the ingress's own enqueue script,
outcomes written the way the dispatcher writes them, filters, retention; and end to end with a
real ingress and worker."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from click.testing import CliRunner

from receiver.enqueue import Enqueuer
from tests.conftest import Stack, wait_for
from uphooks.keys import Keys
from uphooks.settings import Settings, get_settings
from uphooks_cli.main import main

RECORDING = "tests.plugins.recording"


def settings_for(stack: Stack, **extra: Any) -> Settings:
    return Settings(redis_url=stack.redis_url, key_prefix=stack.prefix, queue=stack.queue, **extra)


def keep(settings: Settings, deliveries: list[tuple[str, dict[str, Any]]]) -> list[bool]:
    """Keep deliveries through the ingress's Enqueuer (one batch each, in order)."""

    async def run() -> list[bool]:
        client = aioredis.Redis.from_url(settings.redis_url)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        flags = []
        try:
            for key, body in deliveries:
                record = {
                    "key": key,
                    "event": body["event"],
                    "received_at": time.time(),
                    "headers": {"user-agent": "Upload-Post-Webhooks/1.0"},
                    "body": orjson.dumps(body).decode(),
                }
                flags.append(await enqueuer.submit(key, orjson.dumps(record)))
                await asyncio.sleep(0.01)  # distinct receipt times
        finally:
            await enqueuer.stop()
            await client.aclose()
        return flags

    return asyncio.run(run())


def settle(
    stack: Stack, settings: Settings, key: str, handler: str, state: str, **info: Any
) -> None:
    # What workers/settle.lua leaves behind for a pair: its state and the outcome's details.
    handled = Keys(stack.prefix).handled(key)
    stack.client().hset(handled, mapping={handler: state, f"{handler}@": orjson.dumps(info)})
    stack.client().hsetnx(handled, "~", 2)  # routed (workers/admit.lua)
    stack.client().expire(handled, settings.dedup_ttl_seconds)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def events(stack: Stack, *args: str) -> Ran:
    """``uphooks events ...`` in this process (many calls; one subprocess test is below)."""
    env = {
        "REDIS_URL": stack.redis_url,
        "UPHOOKS_REDIS_URL": stack.redis_url,
        "UPHOOKS_KEY_PREFIX": stack.prefix,
    }
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["events", *args], env=env)
    finally:
        get_settings.cache_clear()
    return Ran(result.exit_code, result.stdout, result.stderr)


def events_process(stack: Stack, *args: str) -> Ran:
    result = stack.cli("events", *args)
    return Ran(result.returncode, result.stdout, result.stderr)


def keys_of(result: Ran) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [row["key"] for row in json.loads(result.stdout)]


def upload(platform: str, profile: str) -> dict[str, Any]:
    return {
        "event": "upload_completed",
        "platform": platform,
        "profile_username": profile,
        "user_email": "a@example.com",
        "result": {"success": True},
        "created_at": "2024-03-15T14:30:00.000000",
    }


def account(event: str, platform: str, profile: str) -> dict[str, Any]:
    return {"event": event, "platform": platform, "profile_username": profile}


def test_ls_filters_and_show(stack: Stack) -> None:
    settings = settings_for(stack)
    assert keep(
        settings,
        [
            ("d:a", upload("tiktok", "p1")),
            ("d:b", upload("youtube", "p2")),
            ("d:c", account("social_account_connected", "instagram", "p1")),
            ("d:d", account("social_account_disconnected", "x", "p2")),
        ],
    ) == [True, True, True, True]
    middle = time.time()
    now = time.time()
    settle(stack, settings, "d:a", "uphooks.log", "done", attempt=1, at=now)
    settle(
        stack,
        settings,
        "d:a",
        "team.notify",
        "retrying",
        attempt=2,
        at=now,
        next_at=now + 90,
        error="TimeoutError('slow')",
    )
    settle(stack, settings, "d:b", "uphooks.log", "done", attempt=1, at=now)
    settle(stack, settings, "d:b", "team.notify", "dead", attempt=12, at=now, error="boom")
    settle(stack, settings, "d:c", "uphooks.log", "done", attempt=1, at=now)

    assert keys_of(events(stack, "ls", "--json")) == ["d:d", "d:c", "d:b", "d:a"]
    assert keys_of(events(stack, "ls", "--json", "--event", "upload_completed")) == ["d:b", "d:a"]
    assert keys_of(events(stack, "ls", "--json", "--platform", "x")) == ["d:d"]
    assert keys_of(events(stack, "ls", "--json", "--profile", "p1")) == ["d:c", "d:a"]
    assert keys_of(events(stack, "ls", "--json", "--status", "dead")) == ["d:b"]
    assert keys_of(events(stack, "ls", "--json", "--status", "retrying")) == ["d:a"]
    assert keys_of(events(stack, "ls", "--json", "--status", "pending")) == ["d:d"]
    assert keys_of(events(stack, "ls", "--json", "--status", "done")) == ["d:c"]
    assert keys_of(events(stack, "ls", "--json", "--handler", "team.*")) == ["d:b", "d:a"]
    assert keys_of(events(stack, "ls", "--json", "--limit", "1")) == ["d:d"]
    assert keys_of(events(stack, "ls", "--json", "--until", str(middle))) == [
        "d:d",
        "d:c",
        "d:b",
        "d:a",
    ]
    assert keys_of(events(stack, "ls", "--json", "--since", str(middle + 60))) == []
    assert keys_of(events(stack, "ls", "--json", "--since", "1h")) == ["d:d", "d:c", "d:b", "d:a"]
    assert keys_of(events(stack, "ls", "--json", "--until", "1h")) == []

    (row,) = json.loads(events(stack, "ls", "--json", "--status", "retrying").stdout)
    assert row["platform"] == "tiktok" and row["profile"] == "p1"
    notify = next(h for h in row["handlers"] if h["handler"] == "team.notify")
    assert notify == {
        "handler": "team.notify",
        "state": "retrying",
        "attempt": 2,
        "at": now,
        "next_at": now + 90,
        "error": "TimeoutError('slow')",
    }

    text = events(stack, "ls", "--event", "upload_completed").stdout
    assert "retrying  upload_completed  tiktok  p1  d:a" in text
    assert "team.notify: retrying (attempt 2), next attempt " in text
    assert "team.notify: dead (attempt 12): boom" in text

    shown = events(stack, "show", "d:a", "--json")
    data = json.loads(shown.stdout)
    assert data["body"] == upload("tiktok", "p1")
    assert data["headers"] == {"user-agent": "Upload-Post-Webhooks/1.0"}
    assert "body: {" in events(stack, "show", "d:a").stdout
    missing = events(stack, "show", "d:nope")
    assert missing.returncode == 1 and "UPHOOKS_DEDUP_TTL_SECONDS" in missing.stderr
    bad_time = events(stack, "ls", "--since", "yesterday")
    assert bad_time.returncode == 2 and "15m" in bad_time.stderr


def test_retention_is_the_dedup_window_and_the_enqueue_script_prunes_the_index(
    stack: Stack,
) -> None:
    settings = settings_for(
        stack, dedup_ttl_seconds=1, verify_tolerance_seconds=1, verify_future_skew_seconds=0
    )
    client, keys = stack.client(), Keys(stack.prefix)
    keep(settings, [("d:old", upload("tiktok", "p1"))])
    settle(stack, settings, "d:old", "uphooks.log", "done", attempt=1, at=time.time())
    assert keys_of(events(stack, "ls", "--json")) == ["d:old"]

    time.sleep(1.6)
    # The record and its outcomes expired with the TTL; the index member waits for the next
    # enqueue, and the listing skips it meanwhile.
    assert not client.exists(keys.delivery("d:old"), keys.handled("d:old"))
    assert client.zrange(keys.events_index, 0, -1) == [b"d:old"]
    assert keys_of(events(stack, "ls", "--json")) == []

    keep(settings, [("d:new", upload("tiktok", "p1"))])
    assert client.zrange(keys.events_index, 0, -1) == [b"d:new"]
    assert keys_of(events(stack, "ls", "--json")) == ["d:new"]


def test_end_to_end_outcomes_of_a_real_worker(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="none")
    stack.worker(RECORDING, UPHOOKS_BUILTIN_LOG_HANDLER="false")
    stack.client().set(f"{stack.prefix}:test:ctl:broken", 1)  # test.breakable fails for good
    url = ingress.url + "/webhooks/upload-post"
    sent = stack.cli(
        "send",
        "upload_completed",
        "--count",
        "2",
        "--url",
        url,
        "--platform",
        "tiktok",
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    broken = stack.cli("send", "social_account_connected", "--url", url)
    assert broken.returncode == 0, broken.stdout

    def rows(*args: str) -> list[dict[str, Any]]:
        result = events_process(stack, "ls", "--json", *args)
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    wait_for(lambda: len(rows("--status", "done")) == 2, timeout=30, what="2 done")
    wait_for(lambda: len(rows("--status", "dead")) == 1, timeout=30, what="1 dead")
    for row in rows("--status", "done"):
        assert row["platform"] == "tiktok" and row["profile"] == "your_profile_username"
        assert {(h["handler"], h["state"], h["attempt"]) for h in row["handlers"]} == {
            ("test.any", "done", 1),
            ("test.flaky", "done", 1),
            ("test.steady", "done", 1),
        }
    (dead,) = rows("--status", "dead")
    states = {h["handler"]: h for h in dead["handlers"]}
    assert states["test.any"]["state"] == "done"
    assert states["test.breakable"]["state"] == "dead"
    assert "broken on purpose" in states["test.breakable"]["error"]
