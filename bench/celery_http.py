"""The bare Celery baseline of bench/async_handlers.py: a task that waits on an HTTP answer.

The app of bench/celery_noop.py (the worker options ours uses) with one more task, run as
``celery -A bench.celery_http worker -P prefork|threads``. It POSTs to ``BENCH_HTTP_URL`` with one
``httpx.Client`` per process (connections reused, as ours), and counts its runs (bench/probe.py).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from bench import probe
from bench.celery_noop import app

URL = os.environ.get("BENCH_HTTP_URL", "http://127.0.0.1:9/")
_client: tuple[int, httpx.Client] | None = None


def client() -> httpx.Client:
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), httpx.Client())
    return _client[1]


@app.task(name="bench.http")  # type: ignore[untyped-decorator]
def http(*args: Any, **kwargs: Any) -> None:
    client().post(URL, content=b"{}", timeout=10).raise_for_status()
    probe.count_run()


__all__ = ["app", "http"]
