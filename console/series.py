"""The last hour of the pipeline, for the Overview charts: one small series in Redis.

Every UPHOOKS_CONSOLE_SAMPLE_SECONDS one console process (a lock decides which) reads the same
counters Prometheus scrapes (UPHOOKS_CONSOLE_METRICS_URLS: the ingress's admin listener, the
workers' metrics ports) and what Redis holds (queue depths, the oldest overdue item, dead
letters, workers alive), and pushes one point onto ``<prefix>:console:series``, trimmed to an
hour. Rates are differences of neighbouring points, so nothing is lost when a console restarts,
and a counter that went down (its process restarted) counts from zero.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from uphooks.backlog import ledger_backlog
from uphooks.collector import queues_of
from uphooks.keys import Keys
from uphooks.liveness import workers_seen
from uphooks.settings import Settings
from workers.background import Periodic

log = logging.getLogger("uphooks.console.series")
HOUR = 3600.0

Point = dict[str, Any]


def metrics_urls(settings: Settings) -> list[str]:
    if settings.console_metrics_urls:
        return settings.console_metrics_urls
    if settings.admin_port:
        return [f"http://{settings.admin_host}:{settings.admin_port}/metrics"]
    return []


def read_counters(texts: list[str]) -> Point:
    """Totals of the counters the Overview needs, summed over every scraped process."""
    requests: dict[str, float] = defaultdict(float)
    runs: dict[str, float] = defaultdict(float)
    dur_sum: dict[str, float] = defaultdict(float)
    dur_count: dict[str, float] = defaultdict(float)
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "uphooks_ingress_requests_total":
                    requests[s.labels.get("status", "?")] += s.value
                elif s.name == "uphooks_handler_runs_total":
                    runs[f"{s.labels.get('handler')}|{s.labels.get('outcome')}"] += s.value
                elif s.name == "uphooks_handler_duration_seconds_sum":
                    dur_sum[s.labels.get("handler", "?")] += s.value
                elif s.name == "uphooks_handler_duration_seconds_count":
                    dur_count[s.labels.get("handler", "?")] += s.value
    return {"requests": requests, "runs": runs, "dur_sum": dur_sum, "dur_count": dur_count}


class Series:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._s = settings
        self._keys = Keys(settings.key_prefix)
        self._key = f"{settings.key_prefix}:console:series"
        self._keep = int(HOUR / settings.console_sample_seconds) + 2

    def sample(self, now: float | None = None) -> Point | None:
        """Take one point unless another console process took this interval's."""
        interval = self._s.console_sample_seconds
        if not self._r.set(f"{self._key}:lock", 1, nx=True, px=int(interval * 900)):
            return None
        texts = []
        for url in metrics_urls(self._s):
            try:
                texts.append(httpx.get(url, timeout=2.0).text)
            except httpx.HTTPError as exc:
                log.debug("metrics at %s not read: %s", url, exc)
        point = read_counters(texts) | self.redis_now()
        point["t"] = time.time() if now is None else now
        point["sources"] = len(texts)
        pipe = self._r.pipeline(transaction=False)
        pipe.lpush(self._key, orjson.dumps(point))
        pipe.ltrim(self._key, 0, self._keep - 1)
        pipe.execute()
        return point

    def redis_now(self) -> Point:
        queues = queues_of(self._s)
        pipe = self._r.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        pipe.zcard(self._keys.dlq_index)
        *depths, dead = pipe.execute()
        backlog = ledger_backlog(self._r, self._keys)
        seen = workers_seen(self._r, self._keys, self._s.heartbeat_stale_seconds)
        return {
            "queues": dict(zip(queues, (int(d) for d in depths), strict=True)),
            "dead": int(dead),
            "overdue": backlog.oldest_overdue_seconds,
            "open": backlog.open_items,
            "alive": seen.alive,
        }

    def points(self) -> list[Point]:
        """The last hour, oldest first."""
        raws: list[bytes] = self._r.lrange(self._key, 0, -1)  # type: ignore[assignment]
        points = [orjson.loads(raw) for raw in reversed(raws)]
        cutoff = time.time() - HOUR
        return [p for p in points if p["t"] >= cutoff]


@dataclass(frozen=True)
class Line:
    name: str
    points: list[tuple[float, float]]  # (time, value)


def rates(points: list[Point], field: str, group: Any = None) -> list[Line]:
    """Per-second rates of a counter field between neighbouring points; ``group`` maps a
    label (a status code, ``handler|outcome``) to the line it adds to."""
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    names: set[str] = set()
    for p in points:
        names.update((group or str)(label) for label in p[field])
    for before, after in itertools.pairwise(points):
        dt = after["t"] - before["t"]
        if dt <= 0:
            continue
        sums: dict[str, float] = defaultdict(float)
        for label, value in after[field].items():
            old = before[field].get(label, 0.0)
            sums[(group or str)(label)] += (value - old if value >= old else value) / dt
        for name in names:
            lines[name].append((after["t"], sums.get(name, 0.0)))
    return [Line(name, lines[name]) for name in sorted(names)]


def gauges(points: list[Point], pick: dict[str, Any]) -> list[Line]:
    return [Line(name, [(p["t"], float(get(p))) for p in points]) for name, get in pick.items()]


def mean_durations(points: list[Point]) -> list[Line]:
    """Mean handler call time per interval, all handlers together."""
    line = []
    for before, after in itertools.pairwise(points):
        calls = sum(after["dur_count"].values()) - sum(before["dur_count"].values())
        spent = sum(after["dur_sum"].values()) - sum(before["dur_sum"].values())
        line.append((after["t"], spent / calls if calls > 0 else 0.0))
    return [Line("mean seconds per call", line)]


class Sampler(Periodic):
    """The console process's background thread that takes the points, the first at once."""

    def __init__(self, series: Series, interval: float) -> None:
        what = "overview sample"
        super().__init__("series", interval, series.sample, log=log, what=what, at_once=True)
