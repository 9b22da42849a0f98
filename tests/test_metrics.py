"""Prometheus metrics: merged across a real prefork worker's processes, the ingress middleware
and endpoint on the real receiver app, and the multiprocess folder's life cycle."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from receiver import metrics as ingress_metrics
from receiver.app import Listeners, create_listeners
from tests.conftest import ROOT, Stack, wait_for
from uphooks import collector, metrics
from uphooks.settings import Settings
from uphooks_cli import simulate
from uphooks_cli.embedded import free_port
from workers import metrics as worker_metrics

PLUGIN = "tests.plugins.operated"
PROBE = "test.metered.probe"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def bodies(n: int) -> list[simulate.Prepared]:
    return simulate.prepare("upload_completed", n, platforms=["tiktok", "youtube"], seed=7)


def test_a_prefork_worker_reports_every_childs_handler_runs(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="none")
    port = free_port()
    # One request at a time: one Celery message each. Queued before the worker starts, so both
    # pool processes get some (posted while it runs, a fast child may take them all).
    for item in bodies(6):
        assert ingress.post(item.body, item.headers).status_code == 202
    stack.worker(
        PLUGIN,
        "-c",
        "2",
        UPHOOKS_WORKER_METRICS_PORT=str(port),
        UPHOOKS_WORKER_METRICS_ADDRESS="127.0.0.1",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
    )
    effects = f"{stack.prefix}:test:effects"
    wait_for(lambda: stack.client().llen(effects) == 6, timeout=30, what="6 handler runs")
    pids = {e.decode().split("|")[1] for e in stack.client().lrange(effects, 0, -1)}
    assert len(pids) == 2, pids  # both children ran handlers

    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    handler = (("handler", PROBE),)
    assert samples[("uphooks_handler_runs_total", (*handler, ("outcome", "done")))] == 6
    assert samples[("uphooks_handler_duration_seconds_count", handler)] == 6
    assert samples[("uphooks_handler_duration_seconds_sum", handler)] >= 6 * 0.15
    assert samples[("uphooks_queue_depth", (("queue", stack.queue),))] == 0
    assert samples[("uphooks_workers_alive", ())] == 1
    assert samples[("uphooks_redis_up", ())] == 1
    assert samples[("uphooks_dead_letters", ())] == 0


@contextmanager
def serving(app: Listeners) -> Iterator[tuple[str, str]]:
    """The listeners on their two sockets, as ``uphooks serve`` runs them: (public, admin)."""
    public = socket.create_server(("127.0.0.1", free_port()))
    admin = socket.create_server(("127.0.0.1", app.admin_port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [public, admin]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="uvicorn")
    try:
        yield (
            f"http://127.0.0.1:{public.getsockname()[1]}",
            f"http://127.0.0.1:{app.admin_port}",
        )
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_ingress_counts_answers_times_them_and_reads_queue_depth(stack: Stack) -> None:
    settings = Settings(
        redis_url=stack.redis_url,
        key_prefix=stack.prefix,
        queue=stack.queue,
        verify=["none"],
        admin_port=free_port(),
    )
    app = create_listeners(settings)

    with serving(app) as (url, admin_url):
        assert httpx.get(url + "/metrics").status_code == 404  # never on the public listener
        before = scrape(admin_url + "/metrics")
        first, second = bodies(2)
        hook = url + settings.webhook_path
        assert httpx.post(hook, content=first.body, headers=first.headers).status_code == 202
        assert httpx.post(hook, content=second.body, headers=second.headers).status_code == 202
        assert httpx.post(hook, content=first.body, headers=first.headers).status_code == 200
        bad = httpx.post(hook, content=b"{", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400
        assert httpx.get(url + "/healthz").status_code == 200  # not the webhook path
        after = scrape(admin_url + "/metrics")

    def delta(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert delta("uphooks_ingress_requests_total", (("status", "202"),)) == 2
    assert delta("uphooks_ingress_requests_total", (("status", "200"),)) == 1
    assert delta("uphooks_ingress_requests_total", (("status", "400"),)) == 1
    assert delta("uphooks_ingress_ack_seconds_count") == 4
    assert 0 < delta("uphooks_ingress_ack_seconds_sum") < 4 * settings.ack_timeout_seconds
    # No worker: the two accepted deliveries wait in the queue (one message each).
    assert after[("uphooks_queue_depth", (("queue", stack.queue),))] == 2
    assert after[("uphooks_workers_alive", ())] == 0
    assert ("uphooks_worker_heartbeat_age_seconds", ()) not in after


def test_duplicates_and_enqueue_failures_are_counted_by_reason() -> None:
    # receiver/ingest.py calls these where it answers a duplicate or a Redis failure.
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    dead = collector.scrape_client(redis.Redis(port=1, socket_connect_timeout=0.1))
    reg = collector.registry(settings, dead, [])

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return reg.get_sample_value(name, labels or {}) or 0.0

    before = (
        value("uphooks_ingress_duplicates_total"),
        value("uphooks_ingress_enqueue_failures_total", {"reason": "timeout"}),
        value("uphooks_ingress_enqueue_failures_total", {"reason": "error"}),
    )
    ingress_metrics.duplicate()
    ingress_metrics.enqueue_failed("timeout")
    ingress_metrics.enqueue_failed("timeout")
    after = (
        value("uphooks_ingress_duplicates_total"),
        value("uphooks_ingress_enqueue_failures_total", {"reason": "timeout"}),
        value("uphooks_ingress_enqueue_failures_total", {"reason": "error"}),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 0]


def test_a_scrape_with_redis_down_says_so_instead_of_failing() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    client = collector.scrape_client(redis.Redis(port=1, socket_connect_timeout=0.2))
    start = time.perf_counter()
    reg = collector.registry(settings, client, collector.queues_of(settings))
    assert reg.get_sample_value("uphooks_redis_up") == 0
    assert reg.get_sample_value("uphooks_queue_depth", {"queue": settings.queue}) is None
    assert time.perf_counter() - start < 2  # well inside a scrape timeout


def test_forked_children_add_up_and_only_the_owner_removes_the_folder(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from uphooks import collector, metrics
        from workers import metrics as worker_metrics
        from uphooks.settings import Settings

        settings = Settings(metrics_dir=sys.argv[1])
        path = metrics.prepare_multiprocess("worker", settings)
        print(path, flush=True)
        for _ in range(3):
            pid = os.fork()
            if pid == 0:  # a pool child: records, exits normally (running atexit)
                worker_metrics.handler_outcomes(done=["a", "a"], dead=["b"])
                sys.exit(0)
            os.waitpid(pid, 0)
        assert path.is_dir(), "a child removed the owner's folder"
        import redis
        reg = collector.registry(settings, redis.Redis(port=1), [])
        runs = "uphooks_handler_runs_total"
        print(reg.get_sample_value(runs, {"handler": "a", "outcome": "done"}))
        print(reg.get_sample_value(runs, {"handler": "b", "outcome": "dead"}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    path, done, dead = result.stdout.split()
    assert (float(done), float(dead)) == (6.0, 3.0)
    assert path.startswith(str(tmp_path))
    assert not os.path.exists(path)


def test_a_metric_that_cannot_be_written_never_stops_a_delivery(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics, "_metrics", object())  # every record now fails inside
    ran = []
    with worker_metrics.handler_call("x"):
        ran.append(1)
    worker_metrics.handler_outcomes(done=["x"])
    worker_metrics.handler_outcomes(dead=["x"])
    assert ran == [1]
    warnings = [r for r in caplog.records if r.name == "uphooks.metrics"]
    assert len(warnings) == 2  # once per kind of record, not once per call
    assert "metrics not recorded" in warnings[0].getMessage()
