"""Bulk replay jobs (console/bulk.py) without a browser: taken over from a dead runner, and a
cancel before the start. The replays themselves run in tests/test_console_browser.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

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
