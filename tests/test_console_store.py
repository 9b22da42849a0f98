"""The console's data layer (console/store.py) against a real Redis, the real ingress script and
ledger scripts, and, where the flow matters, a real ingress and worker process."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from console.store import STATES, ConsoleStore, EventQuery, EventRow
from receiver.enqueue import Enqueuer
from tests.conftest import Stack, fixture_bodies, wait_for
from uphooks import indexes
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.indexes import IndexPruner, PrunerThread
from workers.ledger import Ledger, Route, Settlement

FLOW = "tests.plugins.console_flow"
RANK = {"done": 1, "pending": 2, "running": 3, "retrying": 4, "dead": 5}


def settings_of(stack: Stack, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": stack.redis_url,
        "key_prefix": stack.prefix,
        "queue": stack.queue,
        "enqueue_batch_max": 500,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def store_of(stack: Stack, **kwargs: int) -> ConsoleStore:
    return ConsoleStore(stack.client(), Keys(stack.prefix), 7 * 86400, **kwargs)


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def keys_in(store: ConsoleStore, **filters: str) -> list[str]:
    return [row.key for row in store.list_events(EventQuery(limit=200, **filters)).rows]  # type: ignore[arg-type]


# -- end to end: the real ingress and a real worker ------------------------------------------


def post(stack: Stack, url_ingress: object, name: str, **changes: object) -> str:
    body = json.loads(fixture_bodies()[name])
    body.update(changes)
    response = url_ingress.post(json.dumps(body))  # type: ignore[attr-defined]
    assert response.status_code == 202, response.text
    return str(response.json()["idempotency_key"])


def test_deliveries_move_through_the_state_indexes_as_a_real_worker_handles_them(
    stack: Stack,
) -> None:
    ingress = stack.ingress()
    store = store_of(stack)
    client = stack.client()
    upload = post(stack, ingress, "upload_completed.json")
    broken = post(stack, ingress, "social_account_disconnected.json")
    held = post(stack, ingress, "social_account_reauth_required.json")
    # Nothing routed yet: all three are pending, and so says every count.
    assert keys_in(store, state="pending") == [held, broken, upload]
    assert store.counts() == {"pending": 3, "running": 0, "retrying": 0, "done": 0, "dead": 0}

    client.set(f"{stack.prefix}:test:ctl:hold", 1)
    stack.worker(FLOW, "-c", "2")
    wait_for(lambda: keys_in(store, state="running") == [held], what="the held run as running")
    assert keys_in(store, state="running", handler="console.gate") == [held]
    wait_for(lambda: keys_in(store, state="dead") == [broken], what="the broken one dead")
    wait_for(lambda: keys_in(store, state="done") == [upload], timeout=30, what="upload done")
    assert keys_in(store, state="done", handler="console.flaky") == [upload]
    assert keys_in(store, state="done", handler="console.ok") == [broken, upload]
    assert keys_in(store, state="dead", handler="console.broken") == [broken]
    assert keys_in(store, state="dead", handler="console.ok") == []
    client.delete(f"{stack.prefix}:test:ctl:hold")
    wait_for(lambda: keys_in(store, state="done") == [held, upload], what="the held one done")
    assert keys_in(store, state="running") == keys_in(store, state="pending") == []

    # The flaky handler's three attempts, each with its time, duration, error and traceback.
    detail = store.event(upload)
    assert detail is not None
    flaky = next(h for h in detail.handlers if h.handler == "console.flaky")
    assert [(a.attempt, a.outcome) for a in flaky.attempts] == [
        (1, "retry"),
        (2, "retry"),
        (3, "done"),
    ]
    for a in flaky.attempts[:2]:
        assert a.error is not None and f"failing on purpose, attempt {a.attempt}" in a.error
        assert a.traceback is not None and "TransientError" in a.traceback
        assert "console_flow.py" in a.traceback
    assert all(a.duration_s is not None and a.duration_s >= 0 for a in flaky.attempts)
    assert flaky.attempts[0].at < flaky.attempts[1].at < flaky.attempts[2].at
    assert flaky.attempts[2].error is None
    ok = next(h for h in detail.handlers if h.handler == "console.ok")
    assert [(a.attempt, a.outcome) for a in ok.attempts] == [(1, "done")]
    assert detail.job_id == "a1b2c3d4e5f6..."
    assert detail.post_ids == ("17987654321098765",)
    assert detail.platforms == ("instagram",)
    assert detail.profile == "your_profile_username"
    assert json.loads(detail.body or b"") == json.loads(fixture_bodies()["upload_completed.json"])

    dead = store.event(broken)
    assert dead is not None and dead.state == "dead"
    broken_pair = next(h for h in dead.handlers if h.handler == "console.broken")
    assert broken_pair.state == "dead"
    [last] = broken_pair.attempts
    assert last.outcome == "dead" and last.traceback and "PermanentError" in last.traceback

    # A replay moves it back through pending/running to done, in the same indexes.
    client.set(f"{stack.prefix}:test:ctl:mended", 1)
    record = text(client.get(f"{stack.prefix}:delivery:{broken}"))
    assert Ledger(client, settings_of(stack)).replay(broken, "console.broken", record) == "replayed"
    wait_for(lambda: keys_in(store, state="done") == [held, broken, upload], what="replay done")
    assert keys_in(store, state="dead") == []
    replayed = store.event(broken)
    assert replayed is not None
    attempts = next(h for h in replayed.handlers if h.handler == "console.broken").attempts
    assert [a.outcome for a in attempts] == ["dead", "done"]

    # Erasing the payload keeps outcomes, attempts and every index.
    assert store.erase_payload(broken, "alice")
    erased = store.event(broken)
    assert erased is not None and erased.erased and erased.body is None
    assert erased.erased_by == "alice" and erased.state == "done"
    assert [h.attempts for h in erased.handlers] == [h.attempts for h in replayed.handlers]
    assert erased.platforms == ("tiktok",) and erased.profile == "your_profile_username"
    assert keys_in(store, state="done", platform="tiktok") == [broken]
    assert keys_in(store, handler="console.broken") == [broken]
    assert b"manual_disconnect" not in (client.get(f"{stack.prefix}:delivery:{broken}") or b"")
    assert store.list_events(EventQuery(limit=5)).rows[1].erased


def test_a_run_lost_with_its_process_shows_in_the_attempt_history(stack: Stack) -> None:
    ingress = stack.ingress()
    stack.worker(FLOW, "-c", "1")
    response = ingress.post(json.dumps({"event": "console_crash", "platform": "x"}))
    assert response.status_code == 202, response.text
    key = str(response.json()["idempotency_key"])
    store = store_of(stack)
    wait_for(lambda: keys_in(store, state="done") == [key], timeout=40, what="done after a loss")
    detail = store.event(key)
    assert detail is not None
    [pair] = [h for h in detail.handlers if h.handler == "console.crashy"]
    outcomes = [a.outcome for a in pair.attempts]
    assert outcomes == ["lost", "done"], pair.attempts
    assert pair.attempts[0].error and "lost" in pair.attempts[0].error
    assert pair.attempts[0].at <= pair.attempts[1].at


def test_a_failing_handler_is_listed_as_retrying_with_its_next_retry_until_it_succeeds(
    stack: Stack,
) -> None:
    client = stack.client()
    client.set(f"{stack.prefix}:test:ctl:stubborn", 1)
    ingress = stack.ingress()
    stack.worker(FLOW, "-c", "1")
    response = ingress.post(json.dumps({"event": "console_stubborn", "platform": "x"}))
    key = str(response.json()["idempotency_key"])
    store = store_of(stack)
    wait_for(
        lambda: keys_in(store, state="retrying", handler="console.stubborn") == [key],
        what="the pair listed as retrying",
    )
    wait_for(lambda: keys_in(store, state="retrying") == [key], what="the delivery as retrying")
    detail = store.event(key)
    assert detail is not None and detail.state == "retrying"
    [pair] = [h for h in detail.handlers if h.handler == "console.stubborn"]
    assert pair.state == "retrying" and pair.attempts
    assert pair.next_retry_at is not None and pair.next_retry_at > pair.attempts[-1].at
    assert all(a.outcome == "retry" and "still failing" in (a.error or "") for a in pair.attempts)
    client.delete(f"{stack.prefix}:test:ctl:stubborn")
    wait_for(lambda: keys_in(store, state="done") == [key], what="done once it succeeds")
    assert keys_in(store, state="retrying") == []
    assert keys_in(store, state="retrying", handler="console.stubborn") == []
    assert keys_in(store, state="done", handler="console.stubborn") == [key]


# -- the query layer, over deliveries driven through the real scripts ------------------------


@dataclass
class Fill:
    """Deliveries kept through the real enqueue.lua and moved by the real ledger scripts, with
    what the test meant them to be (the expected answers are computed from this, not Redis)."""

    attrs: dict[str, dict[str, str]] = field(default_factory=dict)
    pairs: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, str] = field(default_factory=dict)
    posts: dict[str, str] = field(default_factory=dict)


def enqueue_all(settings: Settings, items: list[tuple[str, dict[str, object]]]) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        enqueuer = Enqueuer(client, settings)
        await enqueuer.start()
        try:
            for start in range(0, len(items), 2000):
                # Submitted together, so batches share one receipt time: ties the cursor must
                # step through.
                chunk = items[start : start + 2000]
                await asyncio.gather(
                    *(
                        enqueuer.submit(
                            key,
                            orjson.dumps(
                                {
                                    "event": p["event"],
                                    "received_at": time.time(),
                                    "headers": {},
                                    "body": orjson.dumps(p).decode(),
                                }
                            ),
                            b"",
                            indexes.receipt_terms(str(p["event"]), p),
                        )
                        for key, p in chunk
                    )
                )
        finally:
            await enqueuer.stop()
            await client.aclose()

    asyncio.run(run())


def drive(ledger: Ledger, targets: dict[str, dict[str, str]]) -> None:
    """Admit each delivery's pairs and move each to its target state with the real scripts."""
    admitted = [
        (key, [Route(h, None, False) for h in pairs]) for key, pairs in targets.items() if pairs
    ]
    ledger.admit(admitted, "filler")
    now = time.time()
    moving = [(k, h, s) for k, pairs in targets.items() for h, s in pairs.items() if s != "pending"]
    ledger.claim([(k, h, "1.1") for k, h, _ in moving], "filler")
    settles = []
    for key, h, state in moving:
        if state == "running":
            continue
        kind = {"done": "done", "retrying": "retry", "dead": "dead"}[state]
        details = orjson.dumps({"attempt": 1, "at": now, "outcome": kind, "error": "boom"})
        extra: bytes | float | str = (
            now + 3600 if kind == "retry" else b"{}" if kind == "dead" else ""
        )
        settles.append(Settlement((key, h, "1.1"), kind, details, extra))
    ledger.settle(settles, "filler")


@pytest.fixture
def filled(stack: Stack) -> Iterator[tuple[ConsoleStore, Fill, redis.Redis]]:
    rnd = random.Random(12)
    fill = Fill()
    items: list[tuple[str, dict[str, object]]] = []
    events = ("upload_completed", "social_account_connected", "social_account_disconnected")
    for i in range(600):
        event = rnd.choice(events)
        platform = rnd.choice(("instagram", "tiktok", "x"))
        profile = rnd.choice(("p0", "p1", "p2", "p3", ""))
        payload: dict[str, object] = {"event": event, "platform": platform}
        if profile:
            payload["profile_username"] = profile
        key = f"d{i:04d}"
        if event == "upload_completed":
            payload["job_id"] = f"job-{i // 3}"
            payload["result"] = {"success": True, "post_id": f"post-{i}"}
            fill.jobs[key], fill.posts[key] = f"job-{i // 3}", f"post-{i}"
        items.append((key, payload))
        fill.attrs[key] = {"event": event, "platform": platform, "profile": profile}
        pairs: dict[str, str] = {}
        if rnd.random() < 0.9:  # the rest is not routed yet
            pairs["h.a"] = rnd.choice(STATES)
            if event == "upload_completed":
                pairs["h.b"] = rnd.choice(STATES)
        fill.pairs[key] = pairs
    settings = settings_of(stack)
    enqueue_all(settings, items)
    drive(Ledger(stack.client(), settings), fill.pairs)
    yield store_of(stack), fill, stack.client()


def aggregate(pairs: dict[str, str]) -> str:
    if not pairs:
        return "pending"
    return max(pairs.values(), key=RANK.__getitem__)


def expected(client: redis.Redis, prefix: str, fill: Fill, q: EventQuery) -> list[str]:
    out = []
    for key, attrs in fill.attrs.items():
        pairs = fill.pairs[key]
        if q.event and attrs["event"] != q.event:
            continue
        if q.platform and attrs["platform"] != q.platform:
            continue
        if q.profile and attrs["profile"] != q.profile:
            continue
        if q.handler and q.handler not in pairs:
            continue
        if q.state and (pairs[q.handler] if q.handler else aggregate(pairs)) != q.state:
            continue
        out.append(key)
    scores = {k: float(client.zscore(f"{prefix}:events", k) or 0) for k in out}
    out = [k for k in out if (q.since or 0) <= scores[k] <= (q.until or float("inf"))]
    return sorted(out, key=lambda k: (scores[k], k), reverse=True)


def walk(store: ConsoleStore, q: EventQuery) -> tuple[list[EventRow], int]:
    rows: list[EventRow] = []
    pages = 0
    cursor = None
    while True:
        page = store.list_events(EventQuery(**{**q.__dict__, "cursor": cursor}))
        rows += page.rows
        pages += 1
        if page.next_cursor is None:
            return rows, pages
        cursor = page.next_cursor


def test_every_filter_and_combination_pages_through_exactly_the_matching_deliveries(
    stack: Stack, filled: tuple[ConsoleStore, Fill, redis.Redis]
) -> None:
    store, fill, client = filled
    entries: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        f"{stack.prefix}:events", 0, -1, withscores=True
    )
    scores = sorted(s for _, s in entries)
    middle = (scores[len(scores) // 4], scores[3 * len(scores) // 4])
    combos = itertools.product(
        (None, *STATES),
        (None, "upload_completed"),
        (None, "tiktok"),
        (None, "p1"),
        (None, "h.a", "h.b"),
        (None, middle),
    )
    narrowed = 0
    for state, event, platform, profile, handler, window in combos:
        q = EventQuery(
            state=state,
            event=event,
            platform=platform,
            profile=profile,
            handler=handler,
            since=window[0] if window else None,
            until=window[1] if window else None,
            limit=17,
        )
        want = expected(client, stack.prefix, fill, q)
        rows, pages = walk(store, q)
        assert [r.key for r in rows] == want, q
        # Full pages, then at most one empty page (a cursor is given while candidates remain).
        assert pages - 1 <= max(1, -(-len(want) // 17)) <= pages, q
        narrowed += len(want) < len(fill.attrs)
        for row in rows:
            assert row.state == aggregate(fill.pairs[row.key])
            assert row.handlers == fill.pairs[row.key]
            assert row.event == fill.attrs[row.key]["event"]
            assert row.platforms == (fill.attrs[row.key]["platform"],)
            assert row.profile == (fill.attrs[row.key]["profile"] or None)
        assert [k for chunk in store.iter_keys(q, batch=50) for k in chunk] == want
        estimate = store.estimate_detail(q)
        assert estimate.exact and estimate.count == len(want), q
    assert narrowed == 6 * 2 * 2 * 2 * 3 * 2 - 1  # every combination but "no filter" narrows
    every = expected(client, stack.prefix, fill, EventQuery())
    assert len(every) == 600
    assert store.counts() == {
        s: sum(aggregate(p) == s for p in fill.pairs.values()) for s in STATES
    }


def test_a_page_that_reaches_the_scan_bound_comes_back_short_and_the_cursor_goes_on(
    stack: Stack, filled: tuple[ConsoleStore, Fill, redis.Redis]
) -> None:
    _, fill, client = filled
    store = store_of(stack, scan_bound=25)
    q = EventQuery(state="dead", platform="x", profile="p2", limit=5)
    want = expected(client, stack.prefix, fill, q)
    assert 0 < len(want) < 50
    rows, pages = walk(store, q)
    assert [r.key for r in rows] == want
    assert pages > len(want) // 5 + 1  # some pages stopped at the bound
    page = store.list_events(q)
    assert page.scanned <= 25


def test_deliveries_are_found_by_key_job_id_and_post_id(
    stack: Stack, filled: tuple[ConsoleStore, Fill, redis.Redis]
) -> None:
    store, fill, client = filled
    key = next(iter(fill.jobs))
    job = fill.jobs[key]
    same_job = expected(client, stack.prefix, fill, EventQuery())
    same_job = [k for k in same_job if fill.jobs.get(k) == job]
    assert len(same_job) >= 1
    assert store.lookup(job) == same_job
    assert store.lookup(fill.posts[key]) == [key]
    assert store.lookup(key) == [key]
    assert store.lookup("no-such-thing") == []


def test_newest_since_returns_only_what_arrived_after(
    stack: Stack, filled: tuple[ConsoleStore, Fill, redis.Redis]
) -> None:
    store, fill, client = filled
    newest = expected(client, stack.prefix, fill, EventQuery())
    cut = float(client.zscore(f"{stack.prefix}:events", newest[30]) or 0)
    got = store.newest_since(cut, EventQuery(limit=500))
    assert [r.key for r in got] == [
        k for k in newest if float(client.zscore(f"{stack.prefix}:events", k) or 0) > cut
    ]
    assert (
        store.dead_letters(EventQuery(limit=500)).rows
        == store.list_events(EventQuery(state="dead", limit=500)).rows
    )


def test_erasing_a_payload_empties_the_dead_letter_copy_too_and_keeps_the_outcome(
    stack: Stack,
) -> None:
    settings = settings_of(stack)
    client = stack.client()
    body: dict[str, object] = {
        "event": "upload_completed",
        "platform": "x",
        "user_email": "someone@example.com",
    }
    enqueue_all(settings, [("gdpr", body)])
    ledger = Ledger(client, settings)
    ledger.admit([("gdpr", [Route("h.a", None, True)])], "w")
    raw = text(client.get(f"{stack.prefix}:delivery:gdpr"))
    letter = orjson.dumps({"key": "gdpr", "handler": "h.a", "record": raw, "error": "boom"})
    details = orjson.dumps({"attempt": 1, "at": time.time(), "outcome": "dead", "error": "boom"})
    assert ledger.settle([Settlement(("gdpr", "h.a", "1.1"), "dead", details, letter)], "w") == [
        "ok"
    ]
    store = store_of(stack)
    assert store.erase_payload("gdpr", "bob")
    assert not store.erase_payload("no-such-delivery", "bob")
    for name in (f"{stack.prefix}:delivery:gdpr", f"{stack.prefix}:dlq:gdpr|h.a"):
        assert b"someone@example.com" not in (client.get(name) or b""), name
        assert 0 < int(client.ttl(name)) <= settings.dlq_retention_seconds
    detail = store.event("gdpr")
    assert detail is not None and detail.erased and detail.erased_by == "bob"
    assert detail.state == "dead" and detail.platforms == ("x",)
    assert [(h.handler, h.state, [a.error for a in h.attempts]) for h in detail.handlers] == [
        ("h.a", "dead", ["boom"])
    ]
    assert keys_in(store, state="dead", handler="h.a") == ["gdpr"]


# -- retention ------------------------------------------------------------------------------


def index_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    return list(client.scan_iter(f"{prefix}:ix*", count=10_000))


def test_expired_deliveries_vanish_from_every_index_once_the_background_pruner_ran(
    stack: Stack,
) -> None:
    ttl = 4
    settings = settings_of(
        stack, dedup_ttl_seconds=ttl, verify_tolerance_seconds=1, verify_future_skew_seconds=0
    )
    client = stack.client()
    # 100,000 deliveries over 10,000 profiles (rare values: one index each, never written again)
    items: list[tuple[str, dict[str, object]]] = [
        (
            f"old{i}",
            {
                "event": "upload_completed",
                "platform": ("instagram", "tiktok", "x")[i % 3],
                "profile_username": f"rare-{i % 10_000}",
                "job_id": f"j{i}",
                "result": {"post_id": f"p{i}"},
            },
        )
        for i in range(100_000)
    ]
    enqueue_all(settings, items)
    filled = time.time()
    drive(Ledger(client, settings), {k: {"h.a": "done"} for k, _ in items[:5_000]})
    entries = sum(client.zcard(k) for k in index_keys(client, stack.prefix) if b":find:" not in k)
    assert entries > 400_000
    store = ConsoleStore(client, Keys(stack.prefix), ttl)
    wait_for(lambda: time.time() > filled + ttl + 0.5, timeout=30)
    # Past the retention nothing shows, pruned or not.
    assert store.list_events(EventQuery()).rows == []
    assert store.counts() == dict.fromkeys(STATES, 0)
    assert store.lookup("j5") == []

    fresh: list[tuple[str, dict[str, object]]] = [
        (f"new{i}", {"event": "social_account_connected", "platform": "x"}) for i in range(50)
    ]
    enqueue_all(settings, fresh)
    pruner = PrunerThread(IndexPruner(client, settings), interval=0.2).start()
    try:
        wait_for(
            lambda: client.zcount(f"{stack.prefix}:ix", "-inf", "+inf") <= 3,
            timeout=60,
            what="every expired index pruned",
        )
    finally:
        pruner.stop()
    # Lookup buckets expire by themselves, a retention after their end (a second here).
    wait_for(
        lambda: not any(b":find:" in k for k in index_keys(client, stack.prefix)),
        timeout=15,
        what="the lookup buckets expired",
    )
    left = sorted(k.decode() for k in index_keys(client, stack.prefix))
    assert left == sorted(
        [
            f"{stack.prefix}:ix",
            f"{stack.prefix}:ix:ev:social_account_connected",
            f"{stack.prefix}:ix:pf:x",
            f"{stack.prefix}:ix:st:pending",
            f"{stack.prefix}:ix:prune-lock",
        ]
    ), left[:20]
    assert client.zcard(f"{stack.prefix}:events") == 50
    assert client.zcard(f"{stack.prefix}:ix:st:pending") == 50
    shown = [r.key for r in store.list_events(EventQuery(limit=100)).rows]
    assert sorted(shown) == sorted(k for k, _ in fresh)
