"""Bulk replay jobs (console/bulk.py) without a browser: taken over from a dead runner, and a
cancel before the start. The replays themselves run in tests/test_console_browser.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from bench.console_fill import fill
from console.bulk import Jobs
from console.store import ConsoleStore, EventQuery
from uphooks.keys import Keys
from uphooks.settings import Settings


@pytest.fixture
def jobs(redis_url: str) -> Iterator[tuple[Jobs, redis.Redis, str]]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(redis_url)
    settings = Settings(UPHOOKS_REDIS_URL=redis_url, key_prefix=prefix)  # type: ignore[call-arg]
    store = ConsoleStore(client, Keys(prefix), settings.dedup_ttl_seconds)
    yield Jobs(client, settings, store), client, prefix
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


def test_a_job_whose_runner_died_is_taken_over_once_its_lock_runs_out(
    jobs: tuple[Jobs, redis.Redis, str],
) -> None:
    store, client, prefix = jobs
    job = store.start("ann", "state=dead", EventQuery(state="dead"), total=0)
    # Another console process took it and died: its lock is still there for a moment.
    client.hset(f"{prefix}:console:job:{job.id}", "state", "running")
    client.set(f"{prefix}:console:job:{job.id}:lock", "gone", px=300)
    assert store.run_once("me") is False
    client.delete(f"{prefix}:console:job:{job.id}:lock")  # ...until it runs out
    assert store.run_once("me") is True
    finished = store.get(job.id)
    assert finished is not None and finished.state == "done"
    assert store.run_once("me") is False  # nothing left to run


def test_a_job_cancelled_before_it_started_never_replays(
    jobs: tuple[Jobs, redis.Redis, str],
) -> None:
    store, _, _ = jobs
    job = store.start("ann", "", EventQuery(state="dead"), total=5)
    assert store.cancel(job.id) is True
    assert store.run_once("me") is True
    finished = store.get(job.id)
    assert finished is not None
    assert (finished.state, finished.processed) == ("cancelled", 0)
    assert store.cancel(job.id) is False  # a finished job has nothing to cancel


def test_a_bulk_replay_of_5000_dead_letters_replays_each_pair_exactly_once(redis_url: str) -> None:
    """The runner at the volume a bad day leaves: 5,000 dead pairs, put there by the real
    enqueue and ledger scripts, replayed in chunks: each once (a new generation, attempt 1),
    and a second job over the same filter finds nothing left to replay."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(redis_url)
    settings = Settings(  # type: ignore[call-arg]
        UPHOOKS_REDIS_URL=redis_url,
        key_prefix=prefix,
        queue=f"{prefix}:queue",
        console_bulk_pause_seconds=0,
    )
    keys = Keys(prefix)
    try:
        fill(settings, client, 5000, mix=(("dead", 1),))
        store = ConsoleStore(client, keys, settings.dedup_ttl_seconds)
        jobs = Jobs(client, settings, store)
        dead = EventQuery(state="dead")
        assert store.counts()["dead"] == 5000
        job = jobs.start("ann", "state=dead", dead, total=store.estimate(dead))
        assert jobs.run_once("me") is True
        finished = jobs.get(job.id)
        assert finished is not None
        assert (finished.state, finished.processed, finished.replayed, finished.skipped) == (
            "done",
            5000,
            5000,
            0,
        )
        tokens: dict[str, int] = {}
        for key in store.iter_keys(EventQuery(), batch=1000):
            for k in key:
                fields = client.hgetall(keys.handled(k))
                for name, value in fields.items():
                    if name.endswith(b"#"):
                        tokens[value.decode()] = tokens.get(value.decode(), 0) + 1
        # One replayed pair per delivery, each under generation 2 (attempt 1): replayed once.
        assert tokens == {"2.1": 5000}
        assert store.counts()["dead"] == 0
        again = jobs.start("ann", "state=dead", dead, total=store.estimate(dead))
        assert jobs.run_once("me") is True
        second = jobs.get(again.id)
        assert second is not None and (second.processed, second.replayed) == (0, 0)
    finally:
        names = list(client.scan_iter(f"{prefix}*", count=1000))
        if names:
            client.delete(*names)
