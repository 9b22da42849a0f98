"""The handler the workers of ``make scaling`` load (``UPHOOKS_HANDLER_MODULES``): one handler for
the event ``bench_scaling``, whose payload says how long to sleep (bench/scaling.py drives it)."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import signals

from handlers import Context, on
from uphooks.events import BaseEvent
from uphooks.settings import get_settings

EVENT = "bench_scaling"
HANDLER = "scaling.work"

_runs = {"pid": 0, "pending": 0, "flushed": 0.0}
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None or _runs["pid"] != os.getpid():
        _client = redis.Redis.from_url(get_settings().redis_url)
        _runs.update(pid=os.getpid(), pending=0, flushed=time.monotonic())
    return _client


def _key(name: str) -> str:
    return f"{get_settings().key_prefix}:bench:{name}"


def _flush_runs() -> None:
    if _runs["pending"] and _runs["pid"] == os.getpid():
        _redis().incrby(_key("runs"), int(_runs["pending"]))
        _runs.update(pending=0, flushed=time.monotonic())


@on(EVENT, name=HANDLER)
def work(event: BaseEvent, ctx: Context) -> None:
    """Sleep as long as the event says (0: a no-op), and count the run (in memory, flushed
    every 0.25 s and at exit, so counting costs no Redis round trip per event)."""
    sleep_ms = (event.model_extra or {}).get("sleep_ms", 0)
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    _redis()
    _runs["pending"] += 1
    if time.monotonic() - _runs["flushed"] > 0.25:
        _flush_runs()


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(**_: Any) -> None:
    _redis().incr(_key("ready"))


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _child_exit(**_: Any) -> None:
    _flush_runs()
