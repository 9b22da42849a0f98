"""The Overview page: the last hour in charts, and what Redis and the heartbeats say now."""

from __future__ import annotations

import time
from collections import defaultdict

from starlette.requests import Request
from starlette.responses import Response

from console import series
from console.charts import line_chart
from console.guard import page
from console.sessions import Session
from console.state import Console
from uphooks.liveness import workers_seen


def _status_class(code: str) -> str:
    if code == "202":
        return "202 accepted"
    if code == "200":
        return "200 duplicate"
    return f"{code} refused"


def _outcome(label: str) -> str:
    return label.rpartition("|")[2]


def _overview(con: Console, request: Request, session: Session) -> Response:
    points = con.series.points()
    now_point = con.series.redis_now()
    seen = workers_seen(con.client, con.keys, con.settings.heartbeat_stale_seconds)
    info = dict(seen.info)
    workers = [
        {
            "node": node,
            "ago": ago,
            "queues": ", ".join(info[node].queues) if node in info else "",
            "handlers": sorted(info[node].handlers) if node in info else [],
        }
        for node, ago in seen.nodes
    ]
    latest = points[-1] if points else None
    per_handler: dict[str, dict[str, float]] = defaultdict(dict)
    if latest:
        for label, total in latest["runs"].items():
            handler, _, outcome = label.rpartition("|")
            per_handler[handler][outcome] = total
        for handler, count in latest["dur_count"].items():
            if count:
                per_handler[handler]["mean_s"] = latest["dur_sum"][handler] / count
    charts = [
        line_chart(
            "Deliveries per second by status code",
            series.rates(points, "requests", _status_class),
            "/s",
        ),
        line_chart("Handler outcomes per second", series.rates(points, "runs", _outcome), "/s"),
        line_chart("Handler call time", series.mean_durations(points), " s"),
        line_chart(
            "Queue depths",
            series.gauges(
                points,
                {q: (lambda p, q=q: p["queues"].get(q, 0)) for q in now_point["queues"]},
            ),
        ),
        line_chart(
            "Oldest overdue item (s)", series.gauges(points, {"age": lambda p: p["overdue"]}), " s"
        ),
    ]
    return con.render(
        request,
        session,
        "overview.html",
        now=now_point,
        counts=con.store.counts(),
        workers=workers,
        mismatches=[m.describe() for m in seen.mismatches],
        per_handler=dict(sorted(per_handler.items())),
        charts=charts,
        samples=len(points),
        sources=latest["sources"] if latest else 0,
        urls=series.metrics_urls(con.settings),
        taken=time.time(),
    )


overview = page(_overview)
