"""A quick subset of the fault-injection harness (``make chaos`` runs all of it).

Each scenario starts its own redis-server, ingress and two workers, and counts every delivery
from the load client's 2xx to the counting handler's row in SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.load import Sender
from chaos.report import Row, count, details, drain
from chaos.scenarios import duplicates, kills, memory, retries
from chaos.scenarios.base import Ctx, deliveries
from chaos.stack import SECRET

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def ctx(tmp_path: Path) -> Ctx:
    # A fixed maximum instead of scenario 0's measurement: 20 events/s during faults.
    return Ctx(out=tmp_path, quick=True, max_rate=50.0)


def assert_ok(row: Row) -> None:
    assert row.ok, "\n".join([f"{row.scenario} {row.title}", *details(row)])


def test_pool_children_killed_mid_handler_lose_nothing(ctx: Ctx) -> None:
    row = kills.pool_child_killed(ctx)
    assert_ok(row)
    assert row.figures["children_killed"] >= 2
    assert row.acked == row.sent == row.processed > 0


def test_transient_failures_take_k_plus_one_runs_and_one_effect(ctx: Ctx) -> None:
    row = retries.transient_failures(ctx)
    assert_ok(row)
    assert row.figures["run_shapes"] == {row.figures["expected_shape"]: row.sent}


def test_same_delivery_twenty_times_at_once_takes_effect_once(ctx: Ctx) -> None:
    row = duplicates.same_delivery_concurrently(ctx)
    assert_ok(row)
    assert row.figures["answers"] == {202: row.sent, 200: 19 * row.sent}


@pytest.mark.timeout(300)  # ~45 s on a quiet machine, ~80 s on a busy one
def test_a_redis_driven_to_its_maxmemory_answers_503_first_and_loses_nothing(ctx: Ctx) -> None:
    row = memory.redis_near_full(ctx)
    assert_ok(row)
    assert row.figures["errorstat_oom"] == 0
    assert row.figures["answers"].get("503", 0) > 0
    assert row.acked == row.sent == row.processed > 0


def test_the_harness_counts_a_planted_loss(ctx: Ctx) -> None:
    """No false all-clear: a message removed from the queue after its 2xx is reported lost."""
    with ctx.cluster("planted-loss") as cluster:
        url, _ = cluster.ingress()
        batch = Sender(url, secret=SECRET).at_rate(deliveries(3, "planted"), 10.0)
        with cluster.client() as r:
            message = r.rpop(cluster.settings.queue)  # one message vanishes,
            assert message is not None
            # and its item in the ledger's schedule, else the scheduler would recover it.
            [keys] = json.loads(json.loads(message)["body"])[0]
            assert r.zrem(cluster.keys.due, *[f"{k}|" for k in keys]) == len(keys)
        cluster.worker("w0")
        drain(cluster, {d.key for d in batch if d.key}, 5)
        row = Row("canary", "planted loss")
        count(row, cluster, batch)
    assert (row.acked, row.processed, row.lost, row.ok) == (3, 2, 1, False)
    assert any("lost" in line and "in queue=0" in line for line in row.evidence)
