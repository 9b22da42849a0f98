"""End to end: a real uvicorn ingress, a real Redis, real Celery worker processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Stack, fixture_bodies, wait_for
from uphooks_cli.embedded import RedisServer

RECORDING = "tests.plugins.recording"


def effects(stack: Stack) -> Counter[str]:
    raw = stack.client().lrange(f"{stack.prefix}:test:effects", 0, -1)
    return Counter(item.decode() for item in raw)


def set_control(stack: Stack, name: str, value: str | int = 1) -> None:
    stack.client().set(f"{stack.prefix}:test:ctl:{name}", value)


def clear_control(stack: Stack, name: str) -> None:
    stack.client().delete(f"{stack.prefix}:test:ctl:{name}")


def test_every_fixture_is_accepted_and_handled_exactly_once(stack: Stack) -> None:
    ingress = stack.ingress()
    stack.worker(RECORDING)
    keys = {}
    for name, body in fixture_bodies().items():
        response = ingress.post(body)
        assert response.status_code == 202, (name, response.text)
        keys[name] = response.json()["idempotency_key"]
    assert len(set(keys.values())) == len(keys)

    uploads = [k for n, k in keys.items() if n.startswith("upload_completed")]
    expected = Counter({f"test.any|{k}:test.any": 1 for k in keys.values()})
    expected.update({f"test.steady|{k}:test.steady": 1 for k in uploads})
    expected.update({f"test.flaky|{k}:test.flaky#attempt=1": 1 for k in uploads})
    connected = keys["social_account_connected.json"]
    expected[f"test.breakable|{connected}:test.breakable"] = 1
    wait_for(lambda: effects(stack) == expected, what="one effect per handler and fixture")


def test_same_delivery_five_times_in_a_row_and_concurrently_takes_effect_once(
    stack: Stack,
) -> None:
    ingress = stack.ingress()
    stack.worker(RECORDING, UPHOOKS_BUILTIN_LOG_HANDLER="false")
    body = fixture_bodies()["social_account_disconnected.json"]

    sequential = [ingress.post(body) for _ in range(5)]
    assert [r.status_code for r in sequential] == [202, 200, 200, 200, 200]
    assert [r.json()["duplicate"] for r in sequential] == [False, True, True, True, True]

    other = json.loads(body)
    other["account_name"] = "someone_else"
    with ThreadPoolExecutor(5) as pool:
        concurrent = list(pool.map(lambda _: ingress.post(json.dumps(other)), range(5)))
    assert sorted(r.status_code for r in concurrent) == [200, 200, 200, 200, 202]
    assert len({r.json()["idempotency_key"] for r in concurrent}) == 1

    # The header id, when present, is the key: a different body with the same id is a duplicate.
    with_id = [
        ingress.post(body, {"X-Upload-Post-Delivery": "dlv_123"}),
        ingress.post(json.dumps(other), {"X-Upload-Post-Delivery": "dlv_123"}),
    ]
    assert [r.status_code for r in with_id] == [202, 200]
    assert with_id[0].json()["idempotency_key"] == "d:dlv_123"

    keys = {sequential[0].json()["idempotency_key"], concurrent[0].json()["idempotency_key"]}
    keys.add("d:dlv_123")
    wait_for(lambda: effects(stack) == Counter({f"test.any|{k}:test.any": 1 for k in keys}))
    assert stack.client().llen(stack.queue) == 0


def test_flaky_handler_retried_alone_until_it_succeeds(stack: Stack) -> None:
    set_control(stack, "fail_times", 2)
    ingress = stack.ingress()
    stack.worker(RECORDING, UPHOOKS_BUILTIN_LOG_HANDLER="false")
    key = ingress.post(fixture_bodies()["upload_completed_failed.json"]).json()["idempotency_key"]

    wait_for(lambda: f"test.flaky|{key}:test.flaky#attempt=3" in effects(stack), timeout=30)
    attempts = stack.client().get(f"{stack.prefix}:test:attempts:{key}:test.flaky")
    assert attempts == b"3"
    assert effects(stack) == Counter(
        {
            f"test.flaky|{key}:test.flaky#attempt=3": 1,
            f"test.steady|{key}:test.steady": 1,
            f"test.any|{key}:test.any": 1,
        }
    )
    stack.wait_settled(key, {"test.flaky": "done", "test.steady": "done"})


def test_permanent_failure_is_dead_lettered_then_replayed_once_fixed(stack: Stack) -> None:
    set_control(stack, "broken")
    ingress = stack.ingress()
    stack.worker(RECORDING, UPHOOKS_BUILTIN_LOG_HANDLER="false")
    key = ingress.post(fixture_bodies()["social_account_connected.json"]).json()["idempotency_key"]
    entry = f"{key}|test.breakable"
    wait_for(lambda: stack.client().exists(f"{stack.prefix}:dlq:{entry}"), what="dead letter")

    listed = stack.cli("dlq", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["id"], row["attempts"], row["event"]) == (entry, 1, "social_account_connected")
    assert "broken on purpose" in row["error"]
    shown = stack.cli("dlq", "show", entry, "--json")
    assert "PermanentError" in json.loads(shown.stdout)["traceback"]

    clear_control(stack, "broken")
    replayed = stack.cli("dlq", "replay", entry)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1" in replayed.stdout
    expected = Counter({f"test.breakable|{key}:test.breakable": 1, f"test.any|{key}:test.any": 1})
    wait_for(lambda: effects(stack) == expected, what="the fixed handler ran once")
    assert json.loads(stack.cli("dlq", "ls", "--json").stdout) == []


def test_unknown_event_is_accepted_and_reaches_star_handlers(stack: Stack) -> None:
    ingress = stack.ingress()
    stack.worker(RECORDING)
    body = {"event": "comment_received", "comment": {"id": "c1", "text": "nice"}, "platform": "x"}
    response = ingress.post(json.dumps(body))
    assert response.status_code == 202
    key = response.json()["idempotency_key"]
    wait_for(lambda: effects(stack) == Counter({f"test.any|{key}:test.any": 1}))
    stored = json.loads(stack.client().get(f"{stack.prefix}:delivery:{key}"))
    assert json.loads(stored["body"]) == body


def test_malformed_json_gets_400_and_nothing_is_kept(stack: Stack) -> None:
    ingress = stack.ingress()
    for bad in (b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"no_event": 1}'):
        response = ingress.post(bad)
        assert response.status_code == 400, bad
        assert response.json()["status"] == "rejected"
    assert stack.client().llen(stack.queue) == 0
    assert list(stack.client().scan_iter(f"{stack.prefix}:*")) == []


def test_redis_down_gives_503_and_the_retried_delivery_is_processed_once(
    own_redis: RedisServer,
) -> None:
    stack = Stack(own_redis.url, own_redis.data_dir.parent)
    try:
        ingress = stack.ingress(UPHOOKS_ACK_TIMEOUT_SECONDS="1")
        stack.worker(RECORDING, UPHOOKS_BUILTIN_LOG_HANDLER="false")
        body = fixture_bodies()["social_account_reauth_required.json"]

        own_redis.kill()
        down = ingress.post(body)
        assert down.status_code == 503
        assert down.headers["Retry-After"]
        assert down.json()["status"] == "unavailable"

        own_redis.start()
        # The sender retries; the worker reconnects on its own.
        wait_for(lambda: ingress.post(body).status_code in (200, 202), timeout=20)
        key = ingress.post(body).json()["idempotency_key"]
        wait_for(lambda: effects(stack) == Counter({f"test.any|{key}:test.any": 1}), timeout=30)
    finally:
        stack.stop_all()


def test_pool_child_killed_before_the_effect_the_event_is_processed_once(stack: Stack) -> None:
    set_control(stack, "hold_before")
    ingress = stack.ingress()
    stack.worker("tests.plugins.killable", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]
    running = f"{stack.prefix}:test:running:hold_before"
    wait_for(lambda: stack.client().get(running), what="handler running")
    child = int(stack.client().get(running) or 0)
    os.kill(child, signal.SIGKILL)
    clear_control(stack, "hold_before")

    wait_for(lambda: effects(stack) == Counter({f"test.killable|{key}:test.killable": 1}))
    runs = stack.client().get(f"{stack.prefix}:test:runs:{key}:test.killable")
    assert runs == b"2"  # killed once, run again once
    handled = f"{stack.prefix}:handled:{key}"
    # The effect shows before the run is settled: wait for the ledger to say done.
    wait_for(lambda: stack.client().hget(handled, "test.killable") == b"done", what="settled")


def test_kill_after_the_effect_reruns_the_handler_and_its_key_keeps_one_effect(
    stack: Stack,
) -> None:
    set_control(stack, "hold_after")
    ingress = stack.ingress()
    stack.worker("tests.plugins.killable", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]
    running = f"{stack.prefix}:test:running:hold_after"
    wait_for(lambda: stack.client().get(running), what="handler past its effect")
    os.kill(int(stack.client().get(running) or 0), signal.SIGKILL)
    clear_control(stack, "hold_after")

    runs = f"{stack.prefix}:test:runs:{key}:test.killable"
    wait_for(lambda: stack.client().get(runs) == b"2", what="the handler ran again")
    wait_for(
        lambda: stack.client().hget(f"{stack.prefix}:handled:{key}", "test.killable") == b"done"
    )
    assert effects(stack) == Counter({f"test.killable|{key}:test.killable": 1})


def test_whole_worker_killed_another_worker_processes_the_event(stack: Stack) -> None:
    # A short visibility timeout so kombu restores the dead worker's message within the test.
    stack.extra_env.update(
        UPHOOKS_VISIBILITY_TIMEOUT_SECONDS="8",
        UPHOOKS_TASK_TIME_LIMIT_SECONDS="4",
        UPHOOKS_TASK_SOFT_TIME_LIMIT_SECONDS="3",
        UPHOOKS_RETRY_HOP_SECONDS="2",
        UPHOOKS_RESTORE_SWEEP_SECONDS="1",
    )
    set_control(stack, "hold_before")
    ingress = stack.ingress()
    first = stack.worker("tests.plugins.killable", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]
    wait_for(lambda: stack.client().get(f"{stack.prefix}:test:running:hold_before"))
    first.kill_all()
    clear_control(stack, "hold_before")

    stack.worker("tests.plugins.killable", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    wait_for(
        lambda: effects(stack) == Counter({f"test.killable|{key}:test.killable": 1}),
        timeout=45,
        what="the restored message processed by the second worker",
    )


def test_poison_event_is_dead_lettered_and_other_events_keep_flowing(stack: Stack) -> None:
    ingress = stack.ingress()
    stack.worker("tests.plugins.poison", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    bad = ingress.post(json.dumps({"event": "comment_received", "id": 1})).json()
    good = ingress.post(fixture_bodies()["upload_completed.json"]).json()
    entry = f"{bad['idempotency_key']}|test.poison"
    wait_for(lambda: stack.client().exists(f"{stack.prefix}:dlq:{entry}"), timeout=60)
    wait_for(
        lambda: (
            effects(stack) == Counter({f"test.healthy|{good['idempotency_key']}:test.healthy": 1})
        )
    )
    runs = int(stack.client().get(f"{stack.prefix}:test:poison_runs") or 0)
    assert runs == 3  # UPHOOKS_POISON_MAX_DELIVERIES, then dead-lettered without running again


@pytest.mark.parametrize("modules", ["tests.plugins.does_not_exist"])
def test_worker_refuses_to_start_when_a_plugin_fails_to_import(stack: Stack, modules: str) -> None:
    with pytest.raises(RuntimeError, match=r"does_not_exist"):
        stack.worker(modules)


def test_readyz_follows_redis_and_a_paused_redis_gets_503_within_the_ack_timeout(
    own_redis: RedisServer,
) -> None:
    stack = Stack(own_redis.url, own_redis.data_dir.parent)
    try:
        ingress = stack.ingress(UPHOOKS_ACK_TIMEOUT_SECONDS="1")
        assert httpx.get(ingress.admin_url + "/readyz", timeout=5).status_code == 200
        assert own_redis.process is not None
        own_redis.process.send_signal(signal.SIGSTOP)  # alive but silent: the slow case
        try:
            started = time.monotonic()
            slow = ingress.post(fixture_bodies()["upload_completed.json"])
            elapsed = time.monotonic() - started
            assert slow.status_code == 503
            assert elapsed < 3, elapsed
            assert httpx.get(ingress.admin_url + "/readyz", timeout=5).status_code == 503
            assert httpx.get(ingress.url + "/healthz", timeout=5).status_code == 200
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        wait_for(
            lambda: (
                ingress.post(fixture_bodies()["upload_completed.json"]).status_code in (200, 202)
            ),
            timeout=15,
            what="recovery after Redis resumed",
        )
        assert httpx.get(ingress.admin_url + "/readyz", timeout=5).status_code == 200
    finally:
        stack.stop_all()


def test_an_unreadable_delivery_is_dead_lettered_not_looped_and_replays_once_mended(
    stack: Stack,
) -> None:
    ingress = stack.ingress()
    body = fixture_bodies()["social_account_disconnected.json"]
    key = ingress.post(body).json()["idempotency_key"]
    record_key = f"{stack.prefix}:delivery:{key}"
    good_record = stack.client().get(record_key)
    assert good_record is not None
    stack.client().set(record_key, b"\x00 not a record")  # damaged before any worker read it

    stack.worker(RECORDING, UPHOOKS_BUILTIN_LOG_HANDLER="false")
    entry = f"{key}|uphooks.routing"
    wait_for(lambda: stack.client().exists(f"{stack.prefix}:dlq:{entry}"), what="dead letter")
    assert effects(stack) == Counter()
    assert stack.client().llen(stack.queue) == 0

    stack.client().set(record_key, good_record)
    replayed = stack.cli("dlq", "replay", entry)
    assert replayed.returncode == 0, replayed.stderr
    wait_for(lambda: effects(stack) == Counter({f"test.any|{key}:test.any": 1}))
