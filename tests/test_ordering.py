"""``@on(..., ordered_by=...)``: one handler's events with the same key run one at a time, in
the order they happened, across workers; waiting happens in Redis (workers/order.lua).
"""

from __future__ import annotations

import json
import queue
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis

from handlers import BaseEvent, Context, Options, Router
from tests.conftest import PATH, Stack, fixture_bodies, wait_for
from uphooks.errors import ConfigurationError
from uphooks.events import parse_event
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.ledger import Claim, Ledger, Route, Settlement, order_member, order_set
from workers.schedule import Scheduler

ORDERED = "tests.plugins.ordered"
HANDLER = "ordered.account"
KINDS = ("social_account_connected", "social_account_disconnected")
QUIET = {"UPHOOKS_BUILTIN_LOG_HANDLER": "false"}
#: The reorder window of these tests: posting all 200 events must take less (it is asserted).
WINDOW = 8.0
START = datetime(2026, 1, 1, tzinfo=UTC)


def account_events(accounts: int, per_account: int) -> list[bytes]:
    base = json.loads(fixture_bodies()["social_account_connected.json"])
    bodies = []
    for a in range(accounts):
        for n in range(per_account):
            body = dict(base, account_name=f"acct{a:02d}", event=KINDS[n % 2])
            body["status"] = "connected" if n % 2 == 0 else "disconnected"
            body["created_at"] = (START + timedelta(seconds=n, microseconds=a)).isoformat()
            bodies.append(json.dumps(body).encode())
    return bodies


def post_shuffled(stack: Stack, bodies: list[bytes]) -> float:
    """Post in a random order from 8 threads (a kept-alive connection each); returns how long
    posting took."""
    ingress = stack.ingress()
    shuffled = random.sample(bodies, len(bodies))
    clients: queue.Queue[httpx.Client] = queue.Queue()
    for _ in range(8):
        clients.put(httpx.Client(base_url=ingress.url, timeout=15))

    def post(body: bytes) -> int:
        client = clients.get()
        try:
            return client.post(PATH, content=body).status_code
        finally:
            clients.put(client)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, shuffled))
    while not clients.empty():
        clients.get().close()
    assert codes == [202] * len(bodies)
    return time.monotonic() - started


def calls(r: redis.Redis, stack: Stack, account: int) -> list[str]:
    raw = r.lrange(f"{stack.prefix}:test:calls:instagram:acct{account:02d}", 0, -1)
    return [v.decode() for v in raw]


def called(r: redis.Redis, stack: Stack, accounts: range) -> int:
    return sum(len(calls(r, stack, a)) for a in accounts)


def expected(account: int, per_account: int) -> list[str]:
    return [
        (START + timedelta(seconds=n, microseconds=account)).isoformat().replace("+00:00", "")
        + "+00:00"
        for n in range(per_account)
    ]


def test_each_accounts_events_run_one_at_a_time_in_created_order_across_four_processes(
    stack: Stack,
) -> None:
    stack.extra_env.update(QUIET, UPHOOKS_ORDER_WINDOW_SECONDS=str(WINDOW))
    stack.worker(ORDERED, "-c", "2")
    stack.worker(ORDERED, "-c", "2")
    r = stack.client()
    posting = post_shuffled(stack, account_events(20, 10))
    assert posting < WINDOW, f"posting took {posting:.1f}s, longer than the reorder window"

    posted = time.monotonic()
    wait_for(lambda: called(r, stack, range(20)) == 200, timeout=90, what="200 handler calls")
    print(f"\nposting took {posting:.1f}s; all 200 called {time.monotonic() - posted:.1f}s later")
    for a in range(20):
        assert calls(r, stack, a) == expected(a, 10), a
    assert r.lrange(f"{stack.prefix}:test:overlaps", 0, -1) == []
    # Every ordering set emptied: the last call's settle may follow its record by a moment.
    wait_for(lambda: list(r.scan_iter(f"{stack.prefix}:order:*")) == [], what="sets emptied")
    wait_for(lambda: r.zcard(Keys(stack.prefix).due) == 0, what="nothing left open")


def test_a_stuck_account_holds_its_own_events_and_no_other_accounts(stack: Stack) -> None:
    stack.extra_env.update(QUIET, UPHOOKS_ORDER_WINDOW_SECONDS=str(WINDOW))
    r = stack.client()
    r.sadd(f"{stack.prefix}:test:stuck", "instagram:acct00")
    stack.worker(ORDERED, "-c", "2")
    stack.worker(ORDERED, "-c", "2")
    post_shuffled(stack, account_events(20, 10))
    posted = time.monotonic()

    wait_for(lambda: called(r, stack, range(1, 20)) == 190, timeout=90, what="190 other calls")
    others_took = time.monotonic() - posted
    for a in range(1, 20):
        assert calls(r, stack, a) == expected(a, 10), a
    failures = int(r.get(f"{stack.prefix}:test:failures:instagram:acct00") or 0)
    assert failures >= 2  # it kept retrying meanwhile
    assert calls(r, stack, 0) == []
    # Its first event retries; the nine behind it wait in Redis, not in a worker.
    members = r.zrange(order_set(Keys(stack.prefix), HANDLER, "instagram:acct00"), 0, -1)
    states = [
        r.hget(Keys(stack.prefix).handled(m.decode().rsplit("|", 1)[1]), HANDLER) for m in members
    ]
    assert len(states) == 10
    assert states[0] in (b"retrying", b"queued", b"running")
    assert states[1:] == [b"waiting"] * 9
    print(f"\nthe 19 other accounts finished {others_took:.1f}s after posting")

    r.srem(f"{stack.prefix}:test:stuck", "instagram:acct00")
    wait_for(lambda: len(calls(r, stack, 0)) == 10, timeout=30, what="the stuck account")
    assert calls(r, stack, 0) == expected(0, 10)


# -- the scripts' rules, one step at a time (no workers) ------------------------------------


def settings(stack: Stack) -> Settings:
    return Settings(key_prefix=stack.prefix, redis_url=stack.redis_url, queue=stack.queue)


@pytest.fixture
def ledger(stack: Stack) -> Ledger:
    return Ledger(stack.client(), settings(stack))


def admit(ledger: Ledger, key: str, created: float, here: bool = True) -> int:
    keys = ledger.keys
    ledger._r.set(keys.delivery(key), "{}")  # the scheduler drops pairs of a vanished delivery
    route = Route(
        HANDLER, None, here, order_set(keys, HANDLER, "acct"), order_member(key, created, 0.0)
    )
    return ledger.admit([(key, [route])], "me")[0][0]


def state(ledger: Ledger, stack: Stack, key: str) -> str:
    return stack.client().hget(ledger.keys.handled(key), HANDLER).decode()  # type: ignore[union-attr]


def settle(ledger: Ledger, key: str, kind: str, token: str = "1.1", extra: str = "") -> str:
    return ledger.settle([Settlement((key, HANDLER, token), kind, b"{}", extra)], "me")[0]


def test_an_earlier_event_arriving_later_goes_first_unless_the_head_has_started(
    ledger: Ledger, stack: Stack
) -> None:
    assert admit(ledger, "k20", 20.0, here=False) == 0
    assert state(ledger, stack, "k20") == "queued"  # the head, due now
    assert admit(ledger, "k10", 10.0, here=False) == 0
    assert (state(ledger, stack, "k10"), state(ledger, stack, "k20")) == ("queued", "waiting")
    # A copy of k20's pair message finds it waiting: not run.
    assert ledger.claim([("k20", HANDLER, "1.1")], "me")[0].reason == "waiting"
    assert ledger.claim([("k10", HANDLER, "1.1")], "me")[0].state is Claim.MINE
    # k10 has started: an even earlier event waits behind it.
    assert admit(ledger, "k05", 5.0) == 0
    assert state(ledger, stack, "k05") == "waiting"
    assert settle(ledger, "k10", "done") == "ok"
    assert (state(ledger, stack, "k05"), state(ledger, stack, "k20")) == ("queued", "waiting")


def test_a_retrying_head_holds_the_key_and_a_dead_one_releases_it_and_replays_in_place(
    ledger: Ledger, stack: Stack
) -> None:
    assert admit(ledger, "a", 1.0) == 1  # claimed here at once: the head, no window
    assert admit(ledger, "b", 2.0) == 0
    assert admit(ledger, "c", 3.0) == 0
    assert settle(ledger, "a", "retry", extra=str(time.time())) == "ok"
    assert (state(ledger, stack, "a"), state(ledger, stack, "b")) == ("retrying", "waiting")
    Scheduler(stack.client(), settings(stack)).move_due()
    assert [state(ledger, stack, k) for k in "abc"] == ["queued", "waiting", "waiting"]
    assert ledger.claim([("a", HANDLER, "1.2")], "me")[0].state is Claim.MINE
    dead = json.dumps({"key": "a"})
    assert settle(ledger, "a", "dead", token="1.2", extra=dead) == "ok"
    assert (state(ledger, stack, "b"), state(ledger, stack, "c")) == ("queued", "waiting")
    assert ledger.replay("a", HANDLER, "{}") == "replayed"
    # Back at its place, before c; b was queued but had not started: a goes first again.
    assert [state(ledger, stack, k) for k in "abc"] == ["queued", "waiting", "waiting"]


# -- the option ------------------------------------------------------------------------------


def test_ordered_by_names_a_key_the_events_have_or_is_refused_at_import() -> None:
    router = Router()
    with pytest.raises(ConfigurationError, match="does not fit \\['upload_completed'\\]"):
        router.on("upload_completed", options=Options(ordered_by="account"))
    with pytest.raises(ConfigurationError, match="give 'account' or 'upload'"):
        router.on("social_account_connected", options=Options(ordered_by="acount"))

    @router.on("upload_completed", name="by.upload", options=Options(ordered_by="upload"))
    @router.on(
        "*",
        name="by.profile",
        options=Options(ordered_by=lambda e: getattr(e, "profile_username", None)),
    )
    def handler(event: BaseEvent, ctx: Context) -> None: ...

    payload = json.loads(fixture_bodies()["upload_completed.json"])
    by_upload, by_profile = router.get("by.upload"), router.get("by.profile")
    assert by_upload is not None and by_profile is not None
    assert by_upload.order_key(payload, lambda: None) == "instagram:a1b2c3d4e5f6..."
    assert by_profile.order_key(payload, lambda: parse_event(payload)) == "your_profile_username"
    del payload["job_id"]
    assert by_upload.order_key(payload, lambda: None) is None  # nothing to order by: not ordered
