"""The ledger keeps every pair exactly as often as its attempts, whatever copies of its messages
arrive and whatever is lost on the way (workers/ledger.py, workers/schedule.py).

These tests count handler *runs* per (delivery, handler) pair, not effects, and wait past the
moment a late duplicate would have shown.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import redis

from tests.conftest import Ingress, Stack, fixture_bodies, wait_for
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks.taskmessage import Envelope, pair_id, task_body
from workers.schedule import CHUNK, PER_MESSAGE, Scheduler

LEDGERED = "tests.plugins.ledgered"
HANDED_ON = "tests.plugins.handed_on"
QUIET = {"UPHOOKS_BUILTIN_LOG_HANDLER": "false"}
#: Long enough for a late copy to have been taken, claimed and (wrongly) run.
LATE = 6.0


def upload_body() -> bytes:
    body = json.loads(fixture_bodies()["upload_completed.json"])
    body["job_id"] = f"ledger-{uuid.uuid4().hex}"
    return json.dumps(body).encode()


def post(ingress: Ingress, body: bytes) -> str:
    response = ingress.post(body)
    assert response.status_code == 202, response.text
    return str(response.json()["idempotency_key"])


def runs(stack: Stack, handler: str, key: str) -> list[int]:
    raw = stack.client().lrange(f"{stack.prefix}:test:runs:{handler}:{key}", 0, -1)
    return [int(v) for v in raw]


def state(stack: Stack, key: str, handler: str) -> str | None:
    raw = stack.client().hget(Keys(stack.prefix).handled(key), handler)
    return raw.decode() if raw else None


def task_id(message: bytes) -> str:
    return str(json.loads(message)["headers"]["id"])


class Copier:
    """Copies every message that appears on a queue once, at once (a broker restore or a
    republish does the same), and keeps them all for late copies."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self._r = client
        self._queue = queue
        self.seen: dict[str, bytes] = {}
        self.copied = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            messages: list[bytes] = self._r.lrange(self._queue, 0, -1)  # type: ignore[assignment]
            for message in messages:
                tid = task_id(message)
                if tid not in self.seen:
                    self.seen[tid] = message
                    self._r.lpush(self._queue, message)
                    self.copied += 1
            time.sleep(0.003)

    @contextmanager
    def running(self) -> Iterator[Copier]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def push_late_copies(self) -> int:
        for message in self.seen.values():
            self._r.lpush(self._queue, message)
        return len(self.seen)

    def deliver_late(self) -> int:
        """Every message seen once more, after everything settled; returns when the workers
        took them all and a late duplicate had time to run."""
        late = self.push_late_copies()
        time.sleep(LATE)
        wait_for(lambda: self._r.llen(self._queue) == 0, what="late copies taken")
        time.sleep(1)
        return late


def test_copies_of_every_message_run_each_pair_exactly_as_often_as_its_attempts(
    stack: Stack,
) -> None:
    """20 deliveries, each message delivered twice at once and a third time late: a steady
    handler runs once, a flaky one 5 times (attempts 1-5), a permanent failure once."""
    r = stack.client()
    r.set(f"{stack.prefix}:test:ctl:ok_at", 5)
    ingress = stack.ingress()
    keys = [post(ingress, upload_body()) for _ in range(20)]
    with Copier(r, stack.queue).running() as copier:
        stack.worker(LEDGERED, **QUIET)
        stack.worker(LEDGERED, **QUIET)

        def settled() -> bool:
            return all(
                state(stack, k, "ledger.steady") == "done"
                and state(stack, k, "ledger.flaky") == "done"
                and state(stack, k, "ledger.broken") == "dead"
                for k in keys
            )

        wait_for(settled, timeout=60, what="every pair settled")
    late = copier.deliver_late()

    assert late > 20 and copier.copied == late  # route messages and pair messages alike
    for key in keys:
        assert runs(stack, "ledger.steady", key) == [1], key
        assert runs(stack, "ledger.flaky", key) == [1, 2, 3, 4, 5], key
        assert runs(stack, "ledger.broken", key) == [1], key
    assert r.zcard(f"{stack.prefix}:dlq") == 20
    assert r.zcard(Keys(stack.prefix).due) == 0  # nothing left open


def test_a_dead_pair_runs_again_only_through_replay(stack: Stack) -> None:
    r = stack.client()
    ingress = stack.ingress()
    with Copier(r, stack.queue).running() as copier:
        stack.worker(LEDGERED, **QUIET)
        key = post(ingress, upload_body())
        wait_for(lambda: state(stack, key, "ledger.broken") == "dead", what="dead letter")
        wait_for(lambda: state(stack, key, "ledger.flaky") == "done", what="flaky done")
    copier.push_late_copies()
    time.sleep(LATE)
    assert runs(stack, "ledger.broken", key) == [1]

    r.set(f"{stack.prefix}:test:ctl:mended", 1)
    replayed = stack.cli("dlq", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 dead letter(s)" in replayed.stdout
    wait_for(lambda: state(stack, key, "ledger.broken") == "done", what="replayed pair done")
    assert runs(stack, "ledger.broken", key) == [1, 1]  # a new generation starts at attempt 1

    # Old copies, and a second replay of an entry that is gone, change nothing.
    copier.push_late_copies()
    time.sleep(LATE)
    assert runs(stack, "ledger.broken", key) == [1, 1]
    assert runs(stack, "ledger.steady", key) == [1]
    assert runs(stack, "ledger.flaky", key) == [1, 2, 3]


def test_a_route_message_lost_on_its_way_to_a_worker_is_published_again(stack: Stack) -> None:
    r = stack.client()
    ingress = stack.ingress(UPHOOKS_RECOVER_AFTER_SECONDS="2")
    key = post(ingress, upload_body())
    assert r.rpop(stack.queue) is not None  # taken off the queue and never recorded: lost
    assert r.llen(stack.queue) == 0
    time.sleep(2.5)
    status = stack.cli("status", "--json")  # no worker yet: exit 1, but the figures are there
    ledger = json.loads(status.stdout)["ledger"]
    assert ledger["open_items"] == 1 and ledger["oldest_overdue_seconds"] >= 0.4
    stack.worker(LEDGERED, UPHOOKS_RECOVER_AFTER_SECONDS="2", **QUIET)
    wait_for(lambda: runs(stack, "ledger.steady", key) == [1], timeout=20, what="recovered")
    time.sleep(LATE)
    assert runs(stack, "ledger.steady", key) == [1]
    assert runs(stack, "ledger.flaky", key) == [1, 2, 3]


def test_a_hand_off_lost_on_its_way_to_its_queue_is_recovered(stack: Stack) -> None:
    r = stack.client()
    own = f"{stack.queue}.own"
    env = {"UPHOOKS_RECOVER_AFTER_SECONDS": "2", **QUIET}
    ingress = stack.ingress()
    stack.worker(HANDED_ON, **env)
    key = post(ingress, upload_body())
    wait_for(lambda: r.llen(own) == 1, what="the hand-off message")
    assert r.rpop(own) is not None  # lost between Redis and a worker
    assert state(stack, key, "ledger.elsewhere") == "queued"  # tracked, not shown as done

    stack.worker(HANDED_ON, "-Q", own, **env)
    wait_for(lambda: runs(stack, "ledger.elsewhere", key) == [1], timeout=20, what="recovered")
    wait_for(lambda: state(stack, key, "ledger.elsewhere") == "done", what="done")
    time.sleep(LATE)
    assert runs(stack, "ledger.elsewhere", key) == [1]


def test_a_solo_pool_handler_outliving_its_lease_runs_once(stack: Stack) -> None:
    """The lease (2 s) is renewed while the handler runs (7 s): neither the scheduler nor a
    second worker given a copy of its message starts it again."""
    r = stack.client()
    r.set(f"{stack.prefix}:test:ctl:long_seconds", 7)
    env = {"UPHOOKS_LEASE_SECONDS": "2", "UPHOOKS_RECOVER_AFTER_SECONDS": "1", **QUIET}
    ingress = stack.ingress()
    body = fixture_bodies()["social_account_connected.json"]
    key = post(ingress, body)
    (message,) = r.lrange(stack.queue, 0, -1)
    stack.worker(LEDGERED, "-P", "solo", **env)
    wait_for(lambda: runs(stack, "ledger.long", key) == [1], what="the long run started")
    stack.worker(LEDGERED, **env)
    time.sleep(3)  # past the lease: without renewal it would have lapsed by now
    r.lpush(stack.queue, message)
    wait_for(lambda: state(stack, key, "ledger.long") == "done", timeout=30, what="done")
    time.sleep(LATE)
    assert runs(stack, "ledger.long", key) == [1]


def test_the_scheduler_moves_everything_overdue_in_one_pass_at_volume(stack: Stack) -> None:
    """20,000 overdue items (deliveries never routed, retries due, settled pairs) in one pass:
    each published or dropped exactly once; the pass is not capped at a fixed number."""
    settings = Settings(
        redis_url=stack.redis_url,
        key_prefix=stack.prefix,
        queue=stack.queue,
        recover_after_seconds=600,
    )
    r = stack.client()
    keys = Keys(stack.prefix)
    now = time.time()
    n = 20_000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        key = f"d:vol{i}"
        pipe.set(keys.delivery(key), b"{}")
        kind = i % 4
        if kind == 0:  # never routed
            pipe.zadd(keys.due, {f"{key}|": now - 5})
        elif kind == 1:  # a retry that is due
            pipe.hset(keys.handled(key), mapping={"~": 1, "h": "retrying", "h#": "1.2"})
            pipe.zadd(keys.due, {pair_id(key, "h"): now - 1})
        elif kind == 2:  # settled meanwhile: dropped
            pipe.hset(keys.handled(key), mapping={"~": 1, "h": "done"})
            pipe.zadd(keys.due, {pair_id(key, "h"): now - 1})
        else:  # not due yet
            pipe.hset(keys.handled(key), mapping={"~": 1, "h": "retrying", "h#": "1.2"})
            pipe.zadd(keys.due, {pair_id(key, "h"): now + 3600})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()

    scheduler = Scheduler(r, settings)
    moved = scheduler.move_due(now)
    assert moved.looked_at == 3 * n // 4
    assert (moved.routes, moved.pairs, moved.dropped) == (n // 4, n // 4, n // 4)
    assert moved.calls >= (3 * n // 4) // CHUNK
    messages = r.lrange(stack.queue, 0, -1)
    # PER_MESSAGE to a message, but a call's last message may hold fewer.
    assert (
        2 * (n // 4) // PER_MESSAGE
        <= len(messages)
        <= 2 * (n // 4) // PER_MESSAGE + 2 * moved.calls
    )
    named = sum(len(json.loads(json.loads(m)["body"])[0][0]) for m in messages)
    paired = sum(len(json.loads(json.loads(m)["body"])[1].get("pairs", [])) for m in messages)
    assert (named, paired) == (n // 4, n // 4)
    assert state(stack, "d:vol1", "h") == "queued"
    # Nothing is due again before the recovery delay: a second pass publishes nothing.
    again = scheduler.move_due(now + 1)
    assert (again.looked_at, again.routes, again.pairs) == (0, 0, 0)
    assert scheduler.lag(now + 1) == 0.0
    assert r.zcard(keys.due) == 3 * n // 4  # open: published (recovery check) and not yet due
    # The recovery check comes due: each item still open is published once more.
    late = scheduler.move_due(now + 601)
    assert (late.routes, late.pairs, late.again, late.lost_runs) == (n // 4, n // 4, n // 4, 0)


def test_pairs_whose_run_was_lost_are_published_one_to_a_message(stack: Stack) -> None:
    """A process that dies mid-batch loses the runs of every pair it held: the poison's and its
    bystanders'. Published together again, the poison would kill the bystanders beside it until
    their deaths reached the poison limit and they were dead-lettered, though each had run to
    its end every time (chaos scenario 6). So each lost run goes in a message of its own;
    pairs merely queued (hand-offs, retries) are still grouped."""
    settings = Settings(redis_url=stack.redis_url, key_prefix=stack.prefix, queue=stack.queue)
    r = stack.client()
    keys = Keys(stack.prefix)
    now = time.time()
    # At the volume a whole pool's deaths leave (several chunks of one pass), queued pairs
    # interleaved with the lost runs.
    lost = [f"d:lost{i}" for i in range(5_000)]
    queued = [f"d:queued{i}" for i in range(4_000)]
    pipe = r.pipeline(transaction=False)
    for key in lost + queued:
        pipe.set(keys.delivery(key), b"{}")
        state = "running" if key in lost else "queued"  # running with no lease: the run was lost
        pipe.hset(keys.handled(key), mapping={"~": 1, "h": state, "h#": "1.1"})
        pipe.zadd(keys.due, {pair_id(key, "h"): now - 1})
    pipe.execute()

    moved = Scheduler(r, settings).move_due(now)
    assert (moved.pairs, moved.lost_runs) == (9_000, 5_000)
    bodies = [json.loads(json.loads(m)["body"])[1]["pairs"] for m in r.lrange(stack.queue, 0, -1)]
    with_lost = [b for b in bodies if any(p[0].startswith("d:lost") for p in b)]
    assert all(len(b) == 1 for b in with_lost)  # a lost run is never beside another pair
    assert sorted(b[0][0] for b in with_lost) == sorted(lost)
    assert sorted(p[0] for b in bodies if b not in with_lost for p in b) == sorted(queued)
    # Queued pairs PER_MESSAGE to a message, but a chunk's last message may hold fewer.
    assert 5_000 + 4_000 // PER_MESSAGE <= len(bodies) <= 5_000 + 4_000 // PER_MESSAGE + moved.calls


def test_a_worker_started_with_no_handlers_for_an_event_records_it_as_routed_to_none(
    stack: Stack,
) -> None:
    r = stack.client()
    ingress = stack.ingress()
    stack.worker(HANDED_ON, **QUIET)
    body = fixture_bodies()["social_account_connected.json"]  # no handler wants it
    key = post(ingress, body)
    handled = Keys(stack.prefix).handled(key)
    wait_for(lambda: r.hget(handled, "~") == b"0", what="routed to no handler")
    shown = stack.cli("events", "show", key, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "done"
    assert r.zscore(Keys(stack.prefix).due, f"{key}|") is None
    assert httpx.get(ingress.url + "/healthz").status_code == 200


def test_a_process_killed_mid_message_repeats_only_the_pair_it_was_running(stack: Stack) -> None:
    """One message naming three deliveries of a 0.1 s handler: the first two are settled as
    they finish, so a kill during the third repeats that one only."""
    r = stack.client()
    ingress = stack.ingress()
    keys = []
    for i in range(3):
        body = json.loads(fixture_bodies()["social_account_reauth_required.json"])
        body["created_at"] = f"2024-03-15T14:30:0{i}.000000"
        keys.append(post(ingress, json.dumps(body).encode()))
    r.delete(stack.queue)  # one message for all three, as the ingress's group commit makes
    envelope = Envelope(stack.queue)
    r.lpush(stack.queue, envelope.prefix + json.dumps(task_body(keys)) + envelope.suffix())
    r.set(f"{stack.prefix}:test:ctl:kill_in", keys[2])
    stack.worker(LEDGERED, **QUIET)
    wait_for(
        lambda: all(state(stack, k, "ledger.paced") == "done" for k in keys),
        timeout=30,
        what="all three done",
    )
    time.sleep(LATE)
    assert [runs(stack, "ledger.paced", k) for k in keys] == [[1], [1], [1, 1]]
