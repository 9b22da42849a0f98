"""``@on`` and ``Router``: what a registration means, what it refuses, and its per-handler options
(queue, time limit, backoff) carried out by real worker processes."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import redis

from handlers import Context, Options, Router
from handlers.rates import parse_rate
from handlers.registry import Backoff
from tests.conftest import Stack, fixture_bodies, wait_for
from uphooks.errors import ConfigurationError
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.dispatch import Dispatcher

UPLOAD = json.loads(fixture_bodies()["upload_completed.json"])
FAILED = json.loads(fixture_bodies()["upload_completed_failed.json"])
CONNECTED = json.loads(fixture_bodies()["social_account_connected.json"])


def noop(event: object, ctx: Context) -> None:
    pass


def names(router: Router, payload: dict[str, Any]) -> list[str]:
    return [s.name for s in router.handlers_for(payload["event"], payload)]


def test_on_registers_the_plain_function_under_a_stable_default_name() -> None:
    router = Router()
    returned = router.on("upload_completed")(noop)
    assert returned is noop
    [spec] = list(router)
    assert spec.name == f"{__name__}.noop"
    assert (spec.max_attempts, spec.backoff, spec.queue, spec.time_limit) == (None,) * 4


def test_events_and_filters_choose_the_handlers() -> None:
    router = Router()
    router.on("*", name="all")(noop)
    router.on("upload_completed", name="uploads")(noop)
    router.on("upload_completed", success=False, name="failed")(noop)
    router.on("upload_completed", platform=["tiktok", "x"], name="tiktok_or_x")(noop)
    router.on("social_account_connected", account="my_instagram_handle", name="mine")(noop)
    router.on("social_account_connected", status="disconnected", name="never_here")(noop)
    router.on("upload_completed", profile="someone_else", name="other_profile")(noop)

    assert names(router, UPLOAD) == ["all", "uploads"]
    assert names(router, FAILED) == ["all", "uploads", "failed", "tiktok_or_x"]
    assert names(router, CONNECTED) == ["all", "mine"]
    unknown = {"event": "comment_received", "platform": "x"}
    assert names(router, unknown) == ["all"]


def test_star_with_success_filter_keeps_only_uploads_of_that_outcome() -> None:
    router = Router()
    router.on("*", success=True, name="ok_uploads")(noop)
    assert names(router, UPLOAD) == ["ok_uploads"]
    assert names(router, FAILED) == []
    assert names(router, CONNECTED) == []


@pytest.mark.parametrize(
    ("events", "filters", "message"),
    [
        (("upload_completed",), {"plaform": "x"}, "unknown filter"),
        (("social_account_connected",), {"success": True}, "can never match"),
        (("upload_completed",), {"account": "me"}, "can never match"),
        (("upload_completed",), {"success": "yes"}, "must be bool"),
        (("upload_completed",), {"platform": 3}, "must be str"),
        (("upload_completed",), {"platform": []}, "can never match"),
        ((), {}, "at least one event"),
    ],
)
def test_a_filter_that_cannot_match_is_an_error_at_registration(
    events: tuple[str, ...], filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Router().on(*events, **filters)(noop)


def test_filters_on_newer_event_names_are_allowed() -> None:
    router = Router()
    router.on("comment_received", platform="x", name="comments_on_x")(noop)
    assert names(router, {"event": "comment_received", "platform": "x"}) == ["comments_on_x"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff": (0, 10)}, "backoff"),
        ({"backoff": (10, 5)}, "backoff"),
        ({"queue": "a,b"}, "queue"),
        ({"queue": ""}, "queue"),
        ({"time_limit": 0}, "time_limit"),
        ({"name": "a|b"}, "no '|'"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    name = options.pop("name", None)
    with pytest.raises(ConfigurationError, match=message):
        Router().on("upload_completed", name=name, options=Options(**options))(noop)


def test_options_as_keywords_still_work_for_one_release_with_a_deprecation_warning() -> None:
    router = Router()
    with pytest.warns(DeprecationWarning, match=r"options=Options\(queue='slow', max_attempts=2\)"):
        router.on("upload_completed", success=False, name="old", queue="slow", max_attempts=2)(noop)
    spec = router.get("old")
    assert spec is not None
    assert (spec.queue, spec.max_attempts, dict(spec.filters)) == (
        "slow",
        2,
        {"success": frozenset({False})},
    )
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ConfigurationError, match="both as keywords and in options="),
    ):
        router.on("upload_completed", queue="a", options=Options(queue="b"))(noop)


def test_filters_and_options_never_share_a_name() -> None:
    from handlers.filters import FILTERS
    from handlers.options import KEYWORD_OPTIONS

    reserved = {"name", "options", *KEYWORD_OPTIONS}
    assert not reserved & set(FILTERS)
    assert set(KEYWORD_OPTIONS) <= {f.name for f in dataclasses.fields(Options)}


def test_options_are_kept_on_the_spec() -> None:
    router = Router()
    router.on(
        "upload_completed",
        name="h",
        options=Options(max_attempts=3, backoff=(1, 30), queue="slow", time_limit=5),
    )(noop)
    spec = router.get("h")
    assert spec is not None
    assert (spec.max_attempts, spec.backoff, spec.queue, spec.time_limit) == (
        3,
        Backoff(1.0, 30.0),
        "slow",
        5,
    )


def test_async_handlers_and_their_options() -> None:
    async def coroutine(event: object, ctx: Context) -> None:
        pass

    router = Router()
    router.on("upload_completed", name="a", options=Options(concurrency=4, rate="30/s"))(coroutine)
    spec = router.get("a")
    assert spec is not None and spec.is_async and spec.concurrency == 4
    assert spec.rate == {"a": parse_rate("30/s")}
    with pytest.raises(ConfigurationError, match="concurrency= is for async def"):
        Router().on("upload_completed", options=Options(concurrency=2))(noop)
    with pytest.raises(ConfigurationError, match="concurrency must be 1 or more"):
        Options(concurrency=0)
    with pytest.raises(ConfigurationError, match="rate"):
        Options(rate="fast")


def test_two_handlers_with_one_name_are_refused_and_routers_merge() -> None:
    def other(event: object, ctx: Context) -> None:
        pass

    a, b = Router(), Router()
    a.on("upload_completed", name="same")(noop)
    b.on("upload_completed", name="same")(other)
    with pytest.raises(ConfigurationError, match="two handlers are named 'same'"):
        Router(a, b)
    b2 = Router()
    b2.on("*", name="b")(other)
    merged = Router(a, b2, a)  # the same handler twice is fine
    assert sorted(s.name for s in merged) == ["b", "same"]


# -- options carried out by real workers ------------------------------------------------------


def effects(stack: Stack) -> Counter[str]:
    raw: list[bytes] = stack.client().lrange(f"{stack.prefix}:test:effects", 0, -1)  # type: ignore[assignment]
    return Counter(item.decode() for item in raw)


def test_handler_with_its_own_queue_runs_only_on_its_workers_and_retries_there(
    stack: Stack,
) -> None:
    slow_queue = f"{stack.queue}.slow"
    stack.client().set(f"{stack.prefix}:test:ctl:slow_fail_times", 1)
    ingress = stack.ingress()
    plain = dict(UPHOOKS_BUILTIN_LOG_HANDLER="false")
    stack.worker("tests.plugins.queued", TEST_WORKER_ROLE="default", **plain)
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]

    # The default worker runs the fast handler and hands the slow one on to its queue.
    wait_for(lambda: effects(stack) == Counter({f"test.fast|{key}:test.fast@default": 1}))
    wait_for(lambda: stack.client().llen(slow_queue) == 1, what="a message on the slow queue")
    time.sleep(0.5)
    assert effects(stack) == Counter({f"test.fast|{key}:test.fast@default": 1})

    # A worker for that queue alone (`-Q` given to `uphooks worker` overrides UPHOOKS_QUEUE).
    slow_role = dict(TEST_WORKER_ROLE="slow", **plain)
    worker = stack.worker("tests.plugins.queued", "-Q", slow_queue, **slow_role)
    started = worker.log.read_text(errors="replace")  # the heartbeat's line names the queues
    assert f"; queues {slow_queue};" in started and f"queues {stack.queue};" not in started
    slow = f"{key}:test.slow"
    wait_for(lambda: effects(stack)[f"test.slow|{slow}#attempt=2@slow"] == 1, timeout=30)
    assert effects(stack) == Counter(
        {
            f"test.fast|{key}:test.fast@default": 1,
            f"test.slow.failed|{slow}#attempt=1@slow": 1,  # the retry went to the slow queue
            f"test.slow|{slow}#attempt=2@slow": 1,
        }
    )
    stack.wait_settled(key, {"test.fast": "done", "test.slow": "done"})

    # More events: each handler keeps to its own workers.
    stack.client().delete(f"{stack.prefix}:test:ctl:slow_fail_times")
    expected = Counter(effects(stack))
    for n in range(3):
        k = ingress.post(json.dumps(dict(UPLOAD, job_id=f"job-{n}"))).json()["idempotency_key"]
        expected[f"test.fast|{k}:test.fast@default"] += 1
        expected[f"test.slow|{k}:test.slow#attempt=1@slow"] += 1
    wait_for(lambda: effects(stack) == expected, what="three more, each on its own worker")
    assert stack.client().llen(slow_queue) == stack.client().llen(stack.queue) == 0


def test_time_limit_interrupts_a_hanging_call_and_the_retry_runs(stack: Stack) -> None:
    ingress = stack.ingress()
    worker = stack.worker("tests.plugins.timed", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    started = time.monotonic()
    key = ingress.post(fixture_bodies()["upload_completed.json"]).json()["idempotency_key"]
    expected = Counter(
        {f"test.timed|{key}:test.timed#attempt=2": 1, f"test.untimed|{key}:test.untimed": 1}
    )
    wait_for(lambda: effects(stack) == expected, timeout=20)
    assert time.monotonic() - started < 10  # the first call would have slept for 30 s
    assert "ran past its time limit of 1s" in worker.log.read_text(errors="replace")


def test_the_default_queue_hands_pairs_on_grouped_per_queue_and_only_once(redis_url: str) -> None:
    """The dispatcher in this process, on a real Redis: hand-offs go through the ledger's
    schedule onto each handler's queue, and copies of any message run nothing twice."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    main, slow, other = f"{prefix}-main", f"{prefix}-slow", f"{prefix}-other"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, queue=main)
    keys = Keys(settings.key_prefix)
    client = redis.Redis.from_url(redis_url)
    ran: list[str] = []

    def record(event: object, ctx: Context) -> None:
        ran.append(ctx.pair_key)

    router = Router()
    router.on("*", name="here")(record)
    router.on("upload_completed", name="slow_a", options=Options(queue=slow))(record)
    router.on("upload_completed", success=False, name="slow_b", options=Options(queue=slow))(record)
    router.on("social_account_connected", name="other", options=Options(queue=other))(record)
    dispatcher = Dispatcher(client, settings, router, lambda keys: None)
    bodies = {"ok": UPLOAD, "failed": FAILED, "connected": CONNECTED}

    def taken(queue: str) -> list[list[list[str]]]:
        """Pair messages waiting on ``queue``, taken off it."""
        messages = client.lrange(queue, 0, -1)
        client.delete(queue)
        return [json.loads(json.loads(m)["body"])[1]["pairs"] for m in messages]

    try:
        for key, payload in bodies.items():
            record_json = {"key": key, "event": payload["event"], "received_at": 1.0}
            record_json |= {"headers": {}, "body": json.dumps(payload)}
            client.set(keys.delivery(key), json.dumps(record_json))

        dispatcher.process("task-1", list(bodies), queue=main)
        assert sorted(ran) == ["connected:here", "failed:here", "ok:here"]
        on_slow, on_other = taken(slow), taken(other)
        assert [sorted(tuple(p) for p in m) for m in on_slow] == [
            [("failed", "slow_a", "1.1"), ("failed", "slow_b", "1.1"), ("ok", "slow_a", "1.1")]
        ]
        assert on_other == [[["connected", "other", "1.1"]]]
        assert client.llen(main) == 0

        # On the slow queue the pairs run; a copy of the message runs nothing.
        ran.clear()
        dispatcher.process("task-2", [], on_slow[0], queue=slow)
        dispatcher.process("task-2b", [], on_slow[0], queue=slow)
        assert sorted(ran) == ["failed:slow_a", "failed:slow_b", "ok:slow_a"]
        # A pair message runs wherever it is taken (a worker that has the handler), once.
        ran.clear()
        dispatcher.process("task-3", [], on_other[0], queue=slow)
        dispatcher.process("task-4", list(bodies), queue=main)  # a late copy of the first
        assert ran == ["connected:other"]
        assert taken(slow) == taken(other) == []
        assert client.zcard(keys.due) == 0
    finally:
        client.delete(*client.keys(f"{settings.key_prefix}:*"))
        client.close()


def test_the_context_names_its_two_keys_and_keeps_the_old_name_deprecated() -> None:
    ctx = Context("d:k1:team.crm", "d:k1", "team.crm", 1, "upload_completed", 0.0)
    assert (ctx.delivery_key, ctx.pair_key) == ("d:k1", "d:k1:team.crm")
    with pytest.warns(DeprecationWarning, match="ctx.pair_key"):
        assert ctx.idempotency_key == ctx.pair_key


def test_the_plugin_api_exports_what_a_plugin_needs() -> None:
    import handlers
    from uphooks import errors, events

    assert handlers.ConfigurationError is errors.ConfigurationError
    assert handlers.AccountEvent is events.AccountEvent
    router = Router()

    @router.on(
        "social_account_disconnected",
        "social_account_reauth_required",
        name="two",
        options=handlers.Options(queue="q"),
    )
    def two(event: handlers.AccountEvent, ctx: Context) -> None: ...

    spec = router.get("two")
    assert spec is not None and spec.queue == "q"
    assert set(handlers.__all__) >= {"AccountEvent", "ConfigurationError", "Options", "on"}


def test_a_context_built_with_the_old_key_name_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="pair_key"):
        ctx = Context(idempotency_key="d:k:h", delivery_key="d:k", handler_name="h")
    assert (ctx.pair_key, ctx.attempt, dict(ctx.headers), ctx.source) == ("d:k:h", 1, {}, "webhook")
    with pytest.raises(TypeError, match="pair_key"):
        Context(delivery_key="d:k", handler_name="h")
