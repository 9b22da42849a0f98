"""What ``bench.run`` prints and keeps: the machine, the tables, and the goals met or missed."""

from __future__ import annotations

import os
import platform
import shutil
import time
from typing import Any

from harness.machine import cpu_model, redis_server_version

#: Issue 14, goal 5: the Procfile ingress against the bare Starlette route A, in the same run.
INGRESS_RATIO = 0.45
INGRESS_P99 = 2.5


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "redis": redis_server_version(),
        "wrk": shutil.which("wrk") or "absent",
    }


def print_tables(report: dict[str, Any]) -> None:
    ingress = report.get("ingress")
    if ingress:
        print("\nIngress (median of rounds; ratios taken within each round)")
        print(
            f"{'':8}{'2xx/s':>10}{'x A':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99/A':>7}"
            f"{'cpu/req':>9}{'RSS MB':>8}  what"
        )
        for name, row in ingress["median"].items():
            print(
                f"{name:8}{row['ok_per_s']:10.0f}{row.get('ratio_to_A', 0):8.2f}"
                f"{row['p50_ms']:9.1f}{row['p99_ms']:9.1f}{row.get('p99_over_A_p99', 0):7.2f}"
                f"{row['server_cpu_us_per_req']:7.0f}us{row['rss_max_mb']:8.1f}  {row['what']}"
            )
        for r in ingress["rounds"]:
            for name, row in r.items():
                if "batches" in row:
                    print(f"  {name}: {row['check']}, batches {row['batches']}")
    workers = report.get("workers")
    if workers:
        print("\nWorkers (backlog drained, start-up excluded)")
        print(f"{'':26}{'events/s':>10}{'x bare':>8}{'once':>6}  RSS MB per process")
        for name, row in workers.items():
            print(
                f"{name:26}{row['events_per_s']:10.0f}{row.get('ratio_to_bare', 1.0):8.2f}"
                f"{'yes' if row['each_event_once'] else 'NO':>6}  {list(row['rss_mb'].values())}"
            )
    met = report.get("goals")
    if met:
        print("\nGoals")
        for goal, (ok, detail) in met.items():
            print(f"  {'MET ' if ok else 'MISSED'} {goal}: {detail}")


def goals(report: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    ingress = report.get("ingress", {}).get("median", {})
    for name in ("ours", "ours-w2"):
        row = ingress.get(name)
        if row and "ratio_to_A" in row:
            ratio, p99 = row["ratio_to_A"], row["p99_over_A_p99"]
            out[f"{name} >= {INGRESS_RATIO} x A"] = (ratio >= INGRESS_RATIO, f"{ratio:.2f} x A")
            out[f"{name} p99 <= {INGRESS_P99} x A's p99"] = (
                p99 <= INGRESS_P99,
                f"{p99:.2f} x A's p99",
            )
    checks = [
        row["check"]
        for r in report.get("ingress", {}).get("rounds", [])
        for row in r.values()
        if "batches" in row
    ]
    if checks:
        all_in = all(c["enqueued_over_acknowledged"] in (1.0, None) for c in checks)
        found = sum(c["acknowledged_found_in_redis"] for c in checks)
        acked = sum(c["acknowledged"] for c in checks)
        twice = sum(c["keys_queued_more_than_once"] for c in checks)
        detail = f"{found}/{acked} acknowledged keys found (record, index, queued); {twice} twice"
        out["every acknowledged delivery in Redis"] = (all_in and twice == 0, detail)
    workers = report.get("workers", {})
    for pool in ("prefork -c2", "solo"):
        row = workers.get(f"ours / {pool}")
        if row and "ratio_to_bare" in row:
            out[f"workers ({pool}) >= 3 x bare Celery"] = (
                row["ratio_to_bare"] >= 3,
                f"{row['ratio_to_bare']:.2f} x",
            )
    if workers:
        out["every drained event took effect once"] = (
            all(r["each_event_once"] for r in workers.values()),
            ", ".join(f"{k}: {r['handler_runs']}/{r['events']}" for k, r in workers.items()),
        )
    return out
