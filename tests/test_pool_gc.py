"""A prefork pool child leaves what it inherited out of the cyclic GC and makes a full collection
now and then (workers/pool_gc.py), so reference cycles and CPython's free lists are emptied
within seconds, not tens of minutes (docs/perf-notes/memory.md: the children's memory crept).
"""

from __future__ import annotations

import json
import time
import uuid

from tests.conftest import Stack, fixture_bodies, wait_for

COLLECTED = "tests.plugins.collected"
#: What a pool child inherits from its parent: the imports, well over this many objects.
INHERITED = 30_000


def test_a_pool_child_freezes_what_it_inherited_and_collects_fully_now_and_then(
    stack: Stack,
) -> None:
    ingress = stack.ingress()
    stack.worker(
        COLLECTED,
        "-c",
        "2",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
        UPHOOKS_POOL_FULL_COLLECTION_SECONDS="0.2",
    )
    r = stack.client()
    runs = f"{stack.prefix}:test:gc-runs"
    for n in range(1, 21):
        body = json.loads(fixture_bodies()["upload_completed.json"])
        body["job_id"] = f"gc-{uuid.uuid4().hex}"
        assert ingress.post(json.dumps(body)).status_code == 202
        wait_for(lambda n=n: r.llen(runs) >= n, timeout=30, what=f"delivery {n} handled")
        time.sleep(0.1)  # 20 tasks over more than a second: a full collection or two between
    reports = [
        {k.decode(): int(v) for k, v in r.hgetall(name).items()}
        for name in r.scan_iter(f"{stack.prefix}:test:gc:*")
    ]
    assert reports
    for report in reports:
        assert report["frozen"] > INHERITED, report
        assert report["oldest"] < INHERITED // 3, report
    # Each child records its state before its task ends; the one that ran most had collected.
    assert max(report["full_collections_here"] for report in reports) >= 1, reports
