"""The poison limit for a delivery that kills its worker while it is routed (docs/design.md,
section 6), now that a route message's first delivery is counted by its admit call, not before
routing (workers/intake.lua, admit.lua): the death is still counted, through kombu's mark on the
restored message, and the message is dead-lettered after as many deaths as before."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any
from unittest.mock import patch

import pytest
import redis
from redis.client import Pipeline

from handlers import Router
from tests.conftest import Stack, fixture_bodies, wait_for
from tests.test_ledger import LATE
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.deadletter import ROUTING_HANDLER
from workers.dispatch import Dispatcher
from workers.intake import Intaker
from workers.ledger import Ledger, Route


def test_a_delivery_killing_its_worker_while_routed_dies_the_poison_limit_then_is_dead_lettered(
    stack: Stack,
) -> None:
    r = stack.client()
    ingress = stack.ingress()
    stack.worker("tests.plugins.route_poison", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    bad = ingress.post(json.dumps({"event": "comment_received", "id": 1})).json()
    good = ingress.post(fixture_bodies()["upload_completed.json"]).json()
    entry = f"{bad['idempotency_key']}|{ROUTING_HANDLER}"
    wait_for(lambda: r.exists(f"{stack.prefix}:dlq:{entry}"), timeout=60, what="dead letter")
    effect = f"test.routed|{good['idempotency_key']}:test.routed"
    wait_for(
        lambda: Counter(r.lrange(f"{stack.prefix}:test:effects", 0, -1)) == {effect.encode(): 1}
    )
    # UPHOOKS_POISON_MAX_DELIVERIES deaths, the first one uncounted before routing, then the
    # dead letter without routing it again.
    assert int(r.get(f"{stack.prefix}:test:routing_deaths") or 0) == 3
    assert r.llen(stack.queue) == 0
    # Past the moment a late copy or a recovery would have run anything again: each run records
    # its effect, so the good pair ran once and the poison was routed no more.
    time.sleep(LATE)
    assert Counter(r.lrange(f"{stack.prefix}:test:effects", 0, -1)) == {effect.encode(): 1}
    assert int(r.get(f"{stack.prefix}:test:routing_deaths") or 0) == 3


def test_a_first_delivery_is_counted_by_its_admit_and_a_redelivery_before_routing(
    stack: Stack,
) -> None:
    """Real Redis, the real scripts: what each call counts."""
    settings = Settings(redis_url=stack.redis_url, key_prefix=stack.prefix, queue=stack.queue)
    r = stack.client()
    keys = Keys(stack.prefix)
    ledger, intaker = Ledger(r, settings), Intaker(r, settings)
    counter = keys.deliveries_of("task-1")
    for name in ("a", "b"):
        r.set(keys.delivery(name), json.dumps({"key": name}))

    # First delivery: the intake writes nothing (so waits for no fsync); the admit counts it.
    written = r.info("persistence")["aof_current_size"]
    got = intaker.take("task-1", ["a"], stack.queue, True, redelivered=False)
    assert got.seen == 1 and sorted(got.records) == ["a"]
    assert r.info("persistence")["aof_current_size"] == written  # nothing to fsync
    assert not r.exists(counter)
    ledger.admit([("a", [Route("h", None, True)])], "holder", counter)
    assert r.get(counter) == b"1" and 0 < r.ttl(counter) <= 2 * settings.visibility_timeout_seconds
    # Its redelivery (it died after the admit) is the second.
    assert intaker.take("task-1", ["a"], stack.queue, True, redelivered=True).seen == 2
    # An exact copy of a message (same task id, not restored: not marked) counts once more.
    assert ledger.admit([("a", [Route("h", None, True)])], "holder", counter) == [[-1]]
    assert r.get(counter) == b"3"

    # A first delivery that died while routing was never counted: its redelivery is the second
    # all the same, and each later one one more, up to where dispatch.py dead-letters it.
    seen = [intaker.take("task-2", ["b"], stack.queue, True).seen for _ in range(3)]
    assert seen == [2, 3, 4]
    # A pair message is counted before its claim, as before.
    assert intaker.take("task-3", ["b"], stack.queue, False).seen == 1
    assert r.get(keys.deliveries_of("task-3")) == b"1"


def test_a_first_delivery_with_nothing_to_take_is_read_with_one_plain_mget(stack: Stack) -> None:
    """Nothing to count (the admit counts it) and nothing to take (no batch yet): the intake is
    one MGET, no script, and gives what the script gives: the records found, a key named twice
    once, a gone record left out. A redelivery still goes through the script (it counts)."""
    settings = Settings(redis_url=stack.redis_url, key_prefix=stack.prefix, queue=stack.queue)
    r = stack.client()
    keys = Keys(stack.prefix)
    intaker = Intaker(r, settings)
    script, scripted = intaker._script, []

    def spy(**kwargs: Any) -> Any:
        scripted.append(kwargs)
        return script(**kwargs)

    intaker._script = spy  # type: ignore[assignment]
    r.set(keys.delivery("a"), b'{"key": "a"}')
    mget = r.mget
    with patch.object(r, "mget", side_effect=mget) as mgets:
        got = intaker.take("task-1", ["a", "gone", "a"], stack.queue, True, redelivered=False)
    assert (got.seen, got.keys, got.records) == (1, ["a", "gone"], {"a": b'{"key": "a"}'})
    assert (got.taken_messages, got.taken_keys) == (0, 0)
    assert mgets.call_count == 1 and scripted == []
    assert intaker.take("task-1", ["a"], stack.queue, True, redelivered=True).seen == 2
    assert len(scripted) == 1


def test_a_broken_record_is_dead_lettered_even_when_the_first_write_of_it_fails(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead letter of a record that cannot be routed is written in one transaction, retried
    when Redis fails it. redis-py empties a pipeline when its execute() fails, so the retry
    must build the transaction again: retrying execute() alone sent nothing and lost it."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, queue=f"{prefix}-q")
    keys = Keys(prefix)
    client = redis.Redis.from_url(redis_url)
    client.set(keys.delivery("broken"), b"{not json")
    real_execute = Pipeline.execute
    failures: list[int] = []

    def fails_once(self: Pipeline, raise_on_error: bool = True) -> list[object]:
        if not failures:
            failures.append(len(self.command_stack))
            self.reset()  # what redis-py's execute() does in its `finally` when the call fails
            raise redis.ConnectionError("connection reset by peer (injected)")
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", fails_once)
    Dispatcher(client, settings, Router(), lambda keys: None).process("t-1", ["broken"], queue="q")
    monkeypatch.undo()

    assert failures and failures[0] > 0  # the first transaction was lost with its commands
    assert client.hget(keys.handled("broken"), "~") == b"unroutable"
    [entry] = client.zrange(keys.dlq_index, 0, -1)
    dead = json.loads(client.get(keys.dlq_entry(entry.decode())) or b"{}")
    assert dead["handler"] == ROUTING_HANDLER and dead["record"] == "{not json"
