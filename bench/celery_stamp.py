"""The bare Celery latency probe: bench/celery_noop.py's app (same options) with two more tasks
that note when they started, under the id their sender gave (``celery -A bench.celery_stamp``).

``stamp`` is bare Celery. ``claimed`` is bare Celery plus the one step exactly-once cannot do
without: before it "starts", it claims its name in Redis (``SET NX``, on the same server, which
``bench.worker_patterns`` runs with ``appendfsync always``), so a second copy of the message
would find the claim. It is the floor of any exactly-once design on Celery and Redis: what bare
Celery costs, plus one durable write before the handler (issue 14, goal 4).
"""

from __future__ import annotations

import redis

from bench import probe, stamps
from bench.celery_noop import BROKER, app, noop

__all__ = ["app", "claimed", "noop", "stamp"]

_claims = redis.Redis.from_url(BROKER)


@app.task(name="bench.stamp")  # type: ignore[untyped-decorator]
def stamp(name: str) -> None:
    stamps.stamp(name)
    probe.count_run()


@app.task(name="bench.claimed")  # type: ignore[untyped-decorator]
def claimed(name: str) -> None:
    if _claims.set(f"bench:claim:{name}", 1, nx=True, ex=600):
        stamps.stamp(name)
    probe.count_run()
