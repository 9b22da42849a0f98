"""The operations wiring in place: /readyz reports workers, `uphooks serve --workers 2` serves
merged metrics, a worker serves its own, and logs follow one key from ingress to handlers."""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PATH, Stack, fixture_bodies, wait_for
from uphooks_cli import simulate
from uphooks_cli.embedded import free_port

RECORDING = "tests.plugins.recording"


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_readyz_reports_whether_a_worker_is_seen(stack: Stack) -> None:
    plain = stack.ingress(UPHOOKS_VERIFY="none")
    strict = stack.ingress(UPHOOKS_VERIFY="none", UPHOOKS_READYZ_REQUIRES_WORKER="true")
    nobody = httpx.get(plain.admin_url + "/readyz")
    assert nobody.status_code == 200
    assert nobody.json()["workers"] == {"alive": 0, "last_seen_seconds_ago": None}
    assert httpx.get(strict.admin_url + "/readyz").status_code == 503

    stack.worker(RECORDING)
    ready = strict.admin_url + "/readyz"
    wait_for(lambda: httpx.get(ready).status_code == 200, timeout=15, what="ready")
    assert httpx.get(plain.admin_url + "/readyz").json()["workers"]["alive"] == 1


def test_two_ingress_processes_report_the_same_totals(stack: Stack) -> None:
    port, admin_port = free_port(), free_port()
    proc = stack._spawn(
        [sys.executable, "-m", "uphooks_cli", "serve", "--port", str(port), "--workers", "2"],
        "ingress-multi.log",
        stack.env(UPHOOKS_VERIFY="none", UPHOOKS_ADMIN_PORT=str(admin_port)),
    )
    url = f"http://127.0.0.1:{port}"
    admin_url = f"http://127.0.0.1:{admin_port}"
    wait_for(lambda: _up(url), timeout=30, what="two ingress processes")
    log_path = stack.tmp / "ingress-multi.log"

    def posts() -> list[dict[str, Any]]:
        log = log_path.read_text().splitlines()
        return [json.loads(x) for x in log if x.startswith("{") and '"method":"POST"' in x]

    # Rounds of 4 requests at once, each on a new connection, until both processes answered
    # some (the second may start later on a loaded machine): at most 12 rounds.
    items = simulate.prepare("upload_completed", 48, seed=5)
    sent = 0
    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(items), 4):
            statuses = list(pool.map(_post_alone, [url] * 4, items[start : start + 4]))
            assert statuses == [202] * 4
            sent += 4
            time.sleep(0.3)
            if len({x["pid"] for x in posts()}) == 2:
                break
    readings = {
        samples(admin_url + "/metrics")[("uphooks_ingress_requests_total", (("status", "202"),))]
        for _ in range(6)
    }
    assert readings == {float(sent)}
    assert proc.poll() is None
    assert len(posts()) == sent
    assert len({x["pid"] for x in posts()}) == 2  # both processes answered some


def _post_alone(url: str, item: simulate.Prepared) -> int:
    with httpx.Client() as client:  # a new connection each: both processes answer some
        return client.post(url + PATH, content=item.body, headers=item.headers).status_code


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_worker_metrics_and_one_key_from_ingress_to_handlers(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="none", UPHOOKS_LOG_FORMAT="json")
    port = free_port()
    worker = stack.worker(
        RECORDING,
        "-c",
        "2",
        UPHOOKS_WORKER_METRICS_PORT=str(port),
        UPHOOKS_WORKER_METRICS_ADDRESS="127.0.0.1",
        UPHOOKS_LOG_FORMAT="json",
    )
    keys = [ingress.post(body).json()["idempotency_key"] for body in fixture_bodies().values()]
    n = len(keys)
    wait_for(
        lambda: (
            samples(f"http://127.0.0.1:{port}/metrics").get(
                ("uphooks_handler_runs_total", (("handler", "test.any"), ("outcome", "done")))
            )
            == n
        ),
        timeout=30,
        what="all handler runs counted",
    )
    got = samples(f"http://127.0.0.1:{port}/metrics")
    assert got[("uphooks_handler_duration_seconds_count", (("handler", "test.any"),))] == n
    assert got[("uphooks_workers_alive", ())] == 1

    time.sleep(0.5)  # let the last lines reach the files
    ingress_log = next(stack.tmp.glob("ingress-*.log")).read_text()
    ingress_lines = [json.loads(x) for x in ingress_log.splitlines() if x.startswith("{")]
    worker_lines = [json.loads(x) for x in worker.log.read_text().splitlines() if x.startswith("{")]
    for key in keys:
        kept = [x for x in ingress_lines if x.get("key") == key]
        assert kept and "accepted" in kept[0]["msg"]
        runs = {x.get("handler") for x in worker_lines if x.get("key") == key}
        assert {"test.any", "uphooks.log"} <= runs
        assert all(x.get("key") == key for x in worker_lines if key in x["msg"])
