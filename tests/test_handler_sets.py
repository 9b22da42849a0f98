"""Workers on one queue that load different handlers are found: each worker's log, `uphooks
status`, /readyz and the metrics say so while it lasts (real workers, real Redis)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Stack, Worker, wait_for
from uphooks.keys import Keys
from uphooks.liveness import NodeInfo, find_mismatches, workers_seen

RECORDING = "tests.plugins.recording"
WITH_EXTRA = "tests.plugins.recording,tests.plugins.slowish"  # adds test.retry_later
FAST_BEATS = {"UPHOOKS_HEARTBEAT_INTERVAL_SECONDS": "0.2", "UPHOOKS_HEARTBEAT_STALE_SECONDS": "2"}


def handler_sets_metric(url: str, queue: str) -> float | None:
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "uphooks_worker_handler_sets" and s.labels.get("queue") == queue:
                return float(s.value)
    return None


def test_a_mismatch_names_the_queue_and_what_each_worker_lacks() -> None:
    same = frozenset({"a", "b"})
    found = find_mismatches(
        {
            "w1@h": NodeInfo(("q",), same),
            "w2@h": NodeInfo(("q", "slow"), frozenset({"a", "b", "c"})),
            "w3@h": NodeInfo(("other",), frozenset({"a"})),
        }
    )
    assert [m.queue for m in found] == ["q"]
    assert found[0].missing() == {"w1@h": ["c"]}
    assert "'q'" in found[0].describe() and "w1@h lacks c" in found[0].describe()
    assert find_mismatches({"w1@h": NodeInfo(("q",), same), "w2@h": NodeInfo(("q",), same)}) == ()


def test_two_workers_with_different_handlers_on_one_queue_are_reported_everywhere(
    stack: Stack,
) -> None:
    stack.extra_env.update(FAST_BEATS)
    ingress = stack.ingress()
    plain = stack.worker(RECORDING)
    extra = stack.worker(WITH_EXTRA)

    def warned(worker: Worker) -> bool:
        text = worker.log.read_text(errors="replace")
        return "HANDLER MISMATCH" in text and "lacks test.retry_later" in text

    wait_for(lambda: warned(plain) and warned(extra), timeout=20, what="warnings in both logs")

    result = stack.cli("status")
    assert result.returncode == 1
    assert "WARNING: workers on queue" in result.stdout and "test.retry_later" in result.stdout
    data = json.loads(stack.cli("status", "--json").stdout)
    assert data["workers"]["alive"] == 2
    [mismatch] = data["workers"]["handler_mismatch"]
    assert mismatch["queue"] == stack.queue
    assert list(mismatch["missing"].values()) == [["test.retry_later"]]
    nodes = {n["node"]: n for n in data["workers"]["nodes"]}
    assert all(n["queues"] == [stack.queue] for n in nodes.values())

    ready = httpx.get(ingress.admin_url + "/readyz", timeout=5)
    assert ready.status_code == 200
    # A public probe names no hosts: the queue and how many handler sets, nothing more.
    assert ready.json()["workers"]["handler_mismatch"] == [
        {"queue": stack.queue, "handler_sets": 2}
    ]
    assert handler_sets_metric(ingress.admin_url, stack.queue) == 2

    # The worker with the extra handler leaves: the one left agrees with itself again.
    os.kill(extra.proc.pid, signal.SIGTERM)
    extra.proc.wait(timeout=30)
    wait_for(
        lambda: "handler sets agree again" in plain.log.read_text(errors="replace"),
        timeout=20,
        what="the all-clear",
    )
    assert stack.cli("status").returncode == 0
    assert (
        "handler_mismatch"
        not in httpx.get(ingress.admin_url + "/readyz", timeout=5).json()["workers"]
    )
    assert handler_sets_metric(ingress.admin_url, stack.queue) == 1


def test_two_workers_on_one_host_without_node_names_count_as_two(stack: Stack) -> None:
    stack.extra_env.update(FAST_BEATS)
    for n in range(2):
        log = stack.tmp / f"unnamed-{n}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uphooks_cli", "worker", "--without-gossip", "-c", "1"],
                env=stack.env(UPHOOKS_HANDLER_MODULES=RECORDING),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        stack.procs.append(proc)
        Worker(proc, log).wait_ready()
    client, keys = stack.client(), Keys(stack.prefix)
    wait_for(lambda: workers_seen(client, keys, 2).alive == 2, timeout=15, what="two heartbeats")
    seen = workers_seen(client, keys, 2)
    assert {node.split("@")[0] for node, _ in seen.nodes} == {
        f"uphooks-{p.pid}" for p in stack.procs
    }
    assert seen.mismatches == ()
    time.sleep(0.5)
    data = json.loads(stack.cli("status", "--json").stdout)
    assert data["workers"]["alive"] == 2 and "handler_mismatch" not in data["workers"]
