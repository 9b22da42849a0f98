"""Our hand-built task messages, read by kombu's and Celery's own code.

The ingress and the scheduler write Celery's task protocol 2 inside kombu's Redis envelope
themselves (uphooks/taskmessage.py, receiver/enqueue.lua, workers/move.lua): no Celery producer is
involved. So an upgrade of celery or kombu that changes the format must fail here, not in
production: each kind of message is taken as our code pushes it, consumed by kombu's Redis
transport, turned into a Celery request, and its keys compared with a message Celery itself
publishes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import celery
import kombu
import redis.asyncio as aioredis
from celery.worker.request import Request

from receiver.enqueue import Enqueuer
from tests.conftest import Stack
from uphooks.settings import Settings
from uphooks.taskmessage import PAIRS_KWARG, PROCESS_TASK, Envelope, pair_body, task_body
from workers.app import create_celery
from workers.ledger import Ledger, Route
from workers.schedule import Scheduler

VERSIONS = f"celery {celery.__version__}, kombu {kombu.__version__}"
# Ours by design, not by accident: properties Celery/kombu write that we leave out.
#   body_encoding: kombu base64-encodes bodies; ours is plain JSON text, which kombu reads as is.
LEFT_OUT_PROPERTIES = {"body_encoding"}
# Values that differ by design: per-message ids, who sent it, and what we ask of the result.
OWN_HEADER_VALUES = {"id", "root_id", "argsrepr", "origin", "ignore_result"}


def settings_of(stack: Stack) -> Settings:
    return Settings(redis_url=stack.redis_url, key_prefix=stack.prefix, queue=stack.queue)


def ingress_push(settings: Settings, keys: list[str]) -> None:
    """Enqueue deliveries exactly as the ingress does (receiver/enqueue.py and its Lua script)."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        try:
            assert all(await asyncio.gather(*(enqueuer.submit(k, b"{}") for k in keys)))
        finally:
            await enqueuer.stop()
            await client.aclose()

    asyncio.run(scenario())


def consume(queue: str, app: celery.Celery) -> list[kombu.Message]:
    """Every message on the queue, as kombu's Redis transport hands it to a worker."""
    received: list[kombu.Message] = []
    with app.connection_for_read() as conn:
        consumer = conn.Consumer(
            app.amqp.queues[queue],
            accept=["json"],
            callbacks=[lambda _body, message: received.append(message)],
        )
        with consumer:
            while conn.default_channel.client.llen(queue):
                conn.drain_events(timeout=5)
            for message in received:
                message.ack()
        conn.default_channel.client.delete(f"_kombu.binding.{queue}")
    return received


def celery_request(message: kombu.Message, app: celery.Celery) -> Request:
    """The request Celery's default strategy makes of a protocol 2 message, for our task."""
    from workers.tasks import process

    assert "args" not in message.payload, "not read as protocol 2"
    request = Request(
        message,
        app=app,
        task=process,
        hostname="test@protocol",
        body=message.body,
        headers=message.headers,
        decoded=False,
        utc=app.uses_utc_timezone(),
    )
    assert request.task_name == PROCESS_TASK
    assert request.id == message.headers["id"] == message.properties["correlation_id"]
    assert request.delivery_info["exchange"] == ""
    assert request.ignore_result
    # The worker's task takes these arguments (a signature change fails here too).
    inspect.signature(process.run).bind(*request.args, **request.kwargs)
    return request


def without_ids(raw: bytes | str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(message["body"])
    for name in ("id", "root_id", "origin"):
        message["headers"].pop(name)
    for name in ("correlation_id", "delivery_tag"):
        message["properties"].pop(name)
    return message


def test_a_message_the_ingress_pushed_becomes_a_celery_request_for_uphooks_process(
    stack: Stack,
) -> None:
    settings = settings_of(stack)
    keys = ["d:proto-1", "d:proto-2", "d:proto/3"]
    ingress_push(settings, keys)
    raw = stack.client().lrange(settings.queue, 0, -1)
    # The Lua script renders what Envelope + task_body render (the slash: cjson writes "\/").
    envelope = Envelope(settings.queue)
    for pushed in raw:
        named = json.loads(json.loads(pushed)["body"])[0][0]
        rendered = envelope.prefix + json.dumps(task_body(named)) + envelope.suffix()
        assert without_ids(pushed) == without_ids(rendered)

    app = create_celery(settings)
    messages = consume(settings.queue, app)
    assert len(messages) == len(raw)
    seen: list[str] = []
    for message in messages:
        request = celery_request(message, app)
        assert request.delivery_info["routing_key"] == settings.queue
        assert request.kwargs == {}
        (named,) = request.args
        seen += named
    assert sorted(seen) == sorted(keys)


def test_a_pair_message_the_scheduler_pushed_becomes_a_celery_request_with_its_pairs(
    stack: Stack,
) -> None:
    settings = settings_of(stack)
    key, handler, own_queue = "d:proto-pair", "test.elsewhere", f"{stack.queue}-own"
    ingress_push(settings, [key])
    stack.client().delete(settings.queue)  # the route message: the previous test's subject
    # Routed to a handler with a queue of its own: the hand-off waits in the schedule, due now.
    Ledger(stack.client(), settings).admit([(key, [Route(handler, own_queue, False)])], "test")
    assert Scheduler(stack.client(), settings).move_due().pairs == 1
    (pushed,) = stack.client().lrange(own_queue, 0, -1)
    envelope = Envelope(own_queue)
    pairs = json.loads(json.loads(pushed)["body"])[1][PAIRS_KWARG]
    assert [p[:2] for p in pairs] == [[key, handler]]
    rendered = (
        envelope.prefix + json.dumps(pair_body([tuple(p) for p in pairs])) + envelope.suffix()
    )
    assert without_ids(pushed) == without_ids(rendered)

    app = create_celery(settings)
    (message,) = consume(own_queue, app)
    request = celery_request(message, app)
    assert request.delivery_info["routing_key"] == own_queue
    assert request.args == [[]]
    assert request.kwargs == {PAIRS_KWARG: pairs}


def test_our_message_has_the_keys_celery_and_kombu_write_for_the_same_task(stack: Stack) -> None:
    settings = settings_of(stack)
    app = create_celery(settings)
    keys = ["d:proto-1"]
    app.send_task(PROCESS_TASK, args=[keys], queue=settings.queue)
    theirs = json.loads(stack.client().rpop(settings.queue) or b"{}")
    stack.client().delete(f"_kombu.binding.{settings.queue}")
    envelope = Envelope(settings.queue)
    ours = json.loads(envelope.prefix + json.dumps(task_body(keys)) + envelope.suffix())
    v2 = app.amqp.as_task_v2("an-id", PROCESS_TASK, args=[keys], kwargs={})

    def differ(what: str, mine: set[str], celery_s: set[str]) -> str:
        return (
            f"{what}: {VERSIONS} write {sorted(celery_s - mine)} that our message lacks, and "
            f"ours has {sorted(mine - celery_s)} that theirs does not. Update "
            "uphooks/taskmessage.py and receiver/enqueue.lua to the new format (and the pins in "
            "pyproject.toml), then this test."
        )

    assert set(ours) == set(theirs), differ("top level", set(ours), set(theirs))
    for headers in (theirs["headers"], v2.headers):
        assert set(ours["headers"]) == set(headers), differ(
            "headers", set(ours["headers"]), set(headers)
        )
    properties = set(theirs["properties"]) - LEFT_OUT_PROPERTIES
    assert set(ours["properties"]) == properties, differ(
        "properties", set(ours["properties"]), properties
    )
    assert set(v2.properties) <= set(ours["properties"])
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]

    # Same defaults where nothing makes ours differ (a changed default shows up here).
    for name, value in theirs["headers"].items():
        if name not in OWN_HEADER_VALUES:
            assert ours["headers"][name] == value, f"header {name!r} ({VERSIONS})"
    for name in ("delivery_mode", "priority"):
        assert ours["properties"][name] == theirs["properties"][name], f"property {name!r}"
    # The body: the same [args, kwargs, embed] as Celery's own (theirs base64-encoded).
    assert json.loads(ours["body"]) == json.loads(json.dumps(v2.body))
