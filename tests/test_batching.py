"""Consume-side batching (workers/intake.py, intake.lua): a worker running a route message takes
the route messages of ours queued behind it, and nothing else; a worker killed mid-batch loses
nothing and runs nothing twice: every pair is counted, waiting past when a late copy would run.
"""

from __future__ import annotations

import json
import time
import uuid

from tests.conftest import Ingress, Stack, fixture_bodies, wait_for
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks.taskmessage import Envelope, pair_body, task_body
from workers.app import create_celery
from workers.intake import BatchSize, Intaker
from workers.ledger import Ledger

BATCHED = "tests.plugins.batched"
HANDLER = "batch.counted"
#: No reorder window (the handler is "ordered" only to have a hook in routing), no log handler.
ENV = {"UPHOOKS_BUILTIN_LOG_HANDLER": "false", "UPHOOKS_ORDER_WINDOW_SECONDS": "0"}
#: Long enough for a late copy to have been taken, claimed and (wrongly) run.
LATE = 6.0


def post_uploads(ingress: Ingress, n: int) -> tuple[list[str], list[str]]:
    """n deliveries, one request at a time: one route message each, as one sender makes them."""
    keys, jobs = [], []
    for _ in range(n):
        body = json.loads(fixture_bodies()["upload_completed.json"])
        body["job_id"] = f"batch-{uuid.uuid4().hex}"
        response = ingress.post(json.dumps(body))
        assert response.status_code == 202, response.text
        keys.append(str(response.json()["delivery_key"]))
        jobs.append(body["job_id"])
    return keys, jobs


def runs(stack: Stack, key: str) -> list[int]:
    raw = stack.client().lrange(f"{stack.prefix}:test:runs:{HANDLER}:{key}", 0, -1)
    return [int(v) for v in raw]


def took(log_text: str) -> list[int]:
    """How many further messages each batch took, from the worker's log."""
    return [
        int(line.split(": took ")[1].split()[0])
        for line in log_text.splitlines()
        if ": took " in line and "further route message" in line
    ]


def all_ran_once(stack: Stack, keys: list[str]) -> bool:
    return all(runs(stack, k) == [1] for k in keys)


def test_a_batch_of_route_messages_is_taken_at_once_and_each_pair_runs_once(stack: Stack) -> None:
    ingress = stack.ingress()
    keys, _ = post_uploads(ingress, 30)
    assert stack.client().llen(stack.queue) == 30
    worker = stack.worker(BATCHED, "-c", "1", **ENV)
    wait_for(lambda: all_ran_once(stack, keys), timeout=30, what="every pair ran")
    time.sleep(LATE)
    assert [runs(stack, k) for k in keys] == [[1]] * 30
    batches = took(worker.log.read_text())
    # The first message runs alone (no handler time measured yet); later ones take further
    # messages, as many as fit the handler-time budget (fewer on a busy machine).
    assert batches and max(batches) >= 2, batches
    assert stack.client().zcard(Keys(stack.prefix).due) == 0


def test_a_worker_killed_while_routing_a_batch_loses_nothing_and_runs_each_pair_once(
    stack: Stack,
) -> None:
    """The batch's deliveries were taken off the queue but not yet admitted: nothing but the
    schedule knows them, and the scheduler publishes them again after a lease time."""
    r = stack.client()
    ingress = stack.ingress()
    keys, jobs = post_uploads(ingress, 20)
    r.set(f"{stack.prefix}:test:ctl:die_routing", jobs[9])  # inside the second message's batch
    worker = stack.worker(BATCHED, "-c", "1", **ENV)
    wait_for(lambda: all_ran_once(stack, keys), timeout=40, what="every pair ran")
    assert not r.exists(f"{stack.prefix}:test:ctl:die_routing"), "the process never died"
    time.sleep(LATE)
    assert [runs(stack, k) for k in keys] == [[1]] * 20
    log_text = worker.log.read_text()
    assert took(log_text), "no batch was taken"
    assert "deliveries never routed" in log_text  # recovered by the scheduler, not by Celery
    wait_for(lambda: r.zcard(Keys(stack.prefix).due) == 0, what="nothing left open")


def test_a_worker_killed_running_a_batch_loses_nothing_and_runs_each_pair_once(
    stack: Stack,
) -> None:
    """Killed as the batch's first handler starts: every pair of the batch is admitted and
    claimed, none ran. The message's own pair is taken over when Celery gives the message back;
    the taken ones come back when their leases lapse."""
    r = stack.client()
    ingress = stack.ingress()
    keys, jobs = post_uploads(ingress, 20)
    r.set(f"{stack.prefix}:test:ctl:die_running", jobs[1])  # the second message's own delivery
    worker = stack.worker(BATCHED, "-c", "1", **ENV)
    wait_for(lambda: all_ran_once(stack, keys), timeout=40, what="every pair ran")
    assert not r.exists(f"{stack.prefix}:test:ctl:die_running"), "the process never died"
    time.sleep(LATE)
    assert [runs(stack, k) for k in keys] == [[1]] * 20
    log_text = worker.log.read_text()
    assert took(log_text), "no batch was taken"
    assert "the process running them died" in log_text  # leases lapsed, published again
    wait_for(lambda: r.zcard(Keys(stack.prefix).due) == 0, what="nothing left open")


def test_the_intake_takes_only_route_messages_of_ours_and_stops_at_anything_else(
    stack: Stack,
) -> None:
    """Real Redis, the real script: what is taken, what stays, and in what order."""
    settings = Settings(redis_url=stack.redis_url, key_prefix=stack.prefix, queue=stack.queue)
    r = stack.client()
    keys = Keys(stack.prefix)
    envelope = Envelope(stack.queue)

    def ours(*named: str) -> str:
        return envelope.prefix + json.dumps(task_body(list(named))) + envelope.suffix()

    for name in ("own", "a", "b", "c", "d", "e", "f"):
        r.set(keys.delivery(name), json.dumps({"key": name}))
        r.zadd(keys.due, {f"{name}|": time.time() + 600})
    app = create_celery(settings)
    # The queue, oldest (the end kombu reads) first: two of ours, a foreign task, one of ours.
    first, second = ours("a", "b"), ours("c")
    r.lpush(stack.queue, first, second)
    app.send_task("someone.elses", args=[1], queue=stack.queue)
    r.lpush(stack.queue, ours("d"))
    ours_d, foreign = r.lrange(stack.queue, 0, 1)
    intaker = Intaker(r, settings)
    intaker.size.observe(0.001, 1)  # fast handlers: a full batch is allowed

    got = intaker.take("task-1", ["own"], stack.queue, True, redelivered=False)
    assert (got.seen, got.keys, got.taken_messages) == (1, ["own", "a", "b", "c"], 2)
    assert sorted(got.records) == ["a", "b", "c", "own"]
    # Each taken message is counted as handed to a worker, under its own task id, and each
    # taken delivery as taken until it is routed.
    for message in (first, second):
        assert r.get(keys.deliveries_of(json.loads(message)["headers"]["id"])) == b"1"
    assert [r.hget(keys.handled(k), "~t") for k in ("a", "c", "d")] == [b"1", b"1", None]
    Ledger(r, settings).admit([("a", [])], "holder")
    assert r.hget(keys.handled("a"), "~t") is None and r.hget(keys.handled("a"), "~") == b"0"
    assert r.lrange(stack.queue, 0, -1) == [ours_d, foreign]
    assert json.loads(foreign)["headers"]["task"] == "someone.elses"
    # A taken delivery comes due within a lease time; the others keep their score.
    lease_due = time.time() + settings.lease_seconds + 1
    assert (r.zscore(keys.due, "a|") or 0) < lease_due < (r.zscore(keys.due, "d|") or 0)

    # Nothing is taken past the foreign message, nor by a redelivered message (seen > 1: the
    # first delivery counts at least once, by its admit call or by having died before it).
    r.rpop(stack.queue)  # Celery took the foreign one
    again = intaker.take("task-1", ["own"], stack.queue, True, redelivered=True)
    assert (again.seen, again.keys) == (2, ["own"])
    assert r.lrange(stack.queue, 0, -1) == [ours_d]

    # A pair message, and a route message Celery published (base64 body), stay for Celery.
    r.delete(stack.queue)
    pair_message = json.dumps(pair_body([("e", "h", "1.1")]))
    r.lpush(stack.queue, envelope.prefix + pair_message + envelope.suffix())
    assert intaker.take("task-2", ["own"], stack.queue, True, redelivered=False).keys == ["own"]
    r.delete(stack.queue)
    app.send_task("uphooks.process", args=[["e"]], queue=stack.queue)
    assert intaker.take("task-3", ["own"], stack.queue, True, redelivered=False).keys == ["own"]
    # A delivery taken as often as the poison limit allows and never routed (its worker died
    # while routing it, each time) runs under a message's own counter, so it can be
    # dead-lettered: it is not taken again.
    r.delete(stack.queue)
    r.hset(keys.handled("f"), "~t", settings.poison_max_deliveries)
    r.lpush(stack.queue, ours("f"), ours("e"))
    assert intaker.take("task-4", ["own"], stack.queue, True, redelivered=False).keys == ["own"]
    assert r.llen(stack.queue) == 2
    r.delete(f"_kombu.binding.{stack.queue}")


def test_the_batch_size_follows_handler_time() -> None:
    size = BatchSize(32)
    assert size.further(1) == 0  # nothing measured yet: no batch
    size.observe(0.0005, 1)
    assert size.further(1) == 31  # fast handlers: up to the maximum
    assert size.further(40) == 0  # a message already as large as a batch takes nothing
    slow = BatchSize(32)
    slow.observe(0.1, 1)  # 100 ms per delivery: batching would only serialise them
    assert slow.further(1) == 0
    middling = BatchSize(32)
    middling.observe(0.01, 1)
    assert middling.further(1) == 5


def test_a_batch_takes_no_more_than_the_runs_the_process_can_start_off_its_slot() -> None:
    """Deliveries whose runs all went off the slot cost it ~0 s each (observed as such by the
    dispatcher), so the batch is capped by the room off the slot (workers/off_slot.py)."""
    size = BatchSize(32)
    size.observe(0.0, 8)  # 8 deliveries started off the slot, none ran in it
    assert size.further(1) == 31
    assert size.further(1, room=8) == 7  # 8 in all, the message's own included
    assert size.further(1, room=1) == 0
    assert size.further(1, room=0) == 0  # full: the message's own waits for room, alone
    assert size.further(3, room=40) == 29  # the maximum still holds
