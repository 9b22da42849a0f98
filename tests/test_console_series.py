"""The Overview's numbers (console/series.py, console/charts.py): counters read from real
Prometheus text, rates across a restart, and a chart that escapes what it draws."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from console.charts import line_chart
from console.series import Line, rates, read_counters


def exposition(accepted: int, refused: int, done: int, seconds: list[float]) -> str:
    reg = CollectorRegistry()
    requests = Counter("uphooks_ingress_requests", "", ["status"], registry=reg)
    requests.labels("202").inc(accepted)
    requests.labels("401").inc(refused)
    runs = Counter("uphooks_handler_runs", "", ["handler", "outcome"], registry=reg)
    runs.labels("team.notify", "done").inc(done)
    calls = Histogram("uphooks_handler_duration_seconds", "", ["handler"], registry=reg)
    for s in seconds:
        calls.labels("team.notify").observe(s)
    return generate_latest(reg).decode()


def test_counters_are_summed_over_every_scraped_process() -> None:
    point = read_counters([exposition(10, 2, 7, [0.5]), exposition(5, 0, 3, [1.5, 1.0])])
    assert point["requests"] == {"202": 15.0, "401": 2.0}
    assert point["runs"] == {"team.notify|done": 10.0}
    assert point["dur_count"] == {"team.notify": 3.0}
    assert point["dur_sum"] == {"team.notify": 3.0}


def test_rates_are_per_second_and_a_restarted_counter_counts_from_zero() -> None:
    t = time.time()
    points = [
        {"t": t - 20, "requests": {"202": 100.0}},
        {"t": t - 10, "requests": {"202": 150.0, "503": 10.0}},
        {"t": t, "requests": {"202": 20.0}},  # the ingress restarted
    ]
    (accepted, unavailable) = rates(points, "requests")
    assert accepted.name == "202" and accepted.points == [(t - 10, 5.0), (t, 2.0)]
    assert unavailable.points == [(t - 10, 1.0), (t, 0.0)]


def test_a_chart_escapes_its_names_and_draws_its_lines() -> None:
    t = time.time()
    svg = str(line_chart("<b>x</b>", [Line("<script>", [(t - 30, 1.0), (t, 2.0)])]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<b>" not in svg
    assert svg.count("<polyline") == 1
