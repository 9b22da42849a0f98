"""A prefork pool child leaves what it inherited out of the cyclic GC (workers/tasks.py), so its
oldest generation holds only its own objects and reference cycles there are collected soon,
not after tens of minutes (docs/perf-notes/memory.md: the pool children's memory crept).
"""

from __future__ import annotations

import json
import uuid

from tests.conftest import Stack, fixture_bodies, wait_for

COLLECTED = "tests.plugins.collected"
#: What a pool child inherits from its parent: the imports, well over this many objects.
INHERITED = 30_000


def test_a_pool_child_keeps_its_inherited_objects_out_of_the_oldest_generation(
    stack: Stack,
) -> None:
    ingress = stack.ingress()
    stack.worker(COLLECTED, "-c", "2", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    for _ in range(20):
        body = json.loads(fixture_bodies()["upload_completed.json"])
        body["job_id"] = f"gc-{uuid.uuid4().hex}"
        assert ingress.post(json.dumps(body)).status_code == 202
    r = stack.client()
    runs = f"{stack.prefix}:test:gc-runs"
    wait_for(lambda: r.llen(runs) >= 20, timeout=30, what="every delivery handled")
    reports = [
        {k.decode(): int(v) for k, v in r.hgetall(name).items()}
        for name in r.scan_iter(f"{stack.prefix}:test:gc:*")
    ]
    assert reports
    for report in reports:
        assert report["frozen"] > INHERITED, report
        assert report["oldest"] < INHERITED // 3, report
