"""The bare Celery latency probe: bench/celery_noop.py's app (same options) with one more task
that notes when it started, under the id its sender gave it (``celery -A bench.celery_stamp``)."""

from __future__ import annotations

from bench import probe, stamps
from bench.celery_noop import app, noop

__all__ = ["app", "noop", "stamp"]


@app.task(name="bench.stamp")  # type: ignore[untyped-decorator]
def stamp(name: str) -> None:
    stamps.stamp(name)
    probe.count_run()
