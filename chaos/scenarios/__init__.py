"""The scenarios, in the order they run. Each takes a ``Ctx`` and returns one ``Row``."""

from __future__ import annotations

from collections.abc import Callable

from chaos.report import Row
from chaos.scenarios import (
    duplicates,
    failover,
    hosts,
    kills,
    ledger,
    memory,
    poison,
    redis_faults,
    retries,
    steady,
)
from chaos.scenarios.base import Ctx

Scenario = Callable[[Ctx], Row]

#: id -> scenario, in the order they run (0 first: the others use its measured maximum).
SCENARIOS: dict[str, Scenario] = {
    "0": steady.maximum,
    "1": steady.steady,
    "2": kills.pool_child_killed,
    "3": kills.whole_worker_killed,
    "4a": kills.sigterm_main,
    "4b": kills.sigterm_group,
    "5a": retries.transient_failures,
    "5b": retries.kill_between_publish_and_ack,
    "6": poison.poison,
    "7a": duplicates.same_delivery_concurrently,
    "7b": duplicates.same_task_two_workers,
    "8a": redis_faults.redis_killed_always,
    "8b": redis_faults.redis_killed_everysec,
    "8c": redis_faults.connection_lost_after_brpop,
    "8d": redis_faults.retry_lost_after_brpop,
    "9a": retries.retry_publish_short_outage,
    "9b": retries.retry_publish_long_outage,
    "10a": redis_faults.redis_paused,
    "10b": redis_faults.redis_slowed,
    "11a": ledger.loss_and_kills,
    "11b": memory.redis_near_full,
    "11c": ledger.three_copies,
    "17a": failover.failover_ack_replicas,
    "17a0": failover.failover_no_ack_replicas,
    "17a2": failover.failover_ack_two_replicas,
    "17b": hosts.host_cut_mid_handler,
}
