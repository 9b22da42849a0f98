"""What every benchmark module shares: where results go, the names that isolate a run in Redis,
the worker options both sides get, the environment of a benchmark process, the log line, and
where a report is kept."""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from harness.env import pipeline_env
from harness.procs import ROOT

RESULTS = ROOT / "bench" / "results"
PATH = "/webhooks/upload-post"
# Shaped like a real signing secret (whsec_ + base64): the ingress tries both key readings.
SECRET = "whsec_" + base64.b64encode(b"uphooks benchmark secret, not for use").decode()
PREFIX = "bench"
OUR_QUEUE = "bench-ours"
BARE_QUEUE = "bench-noop"
WORKER_FLAGS = ["--without-gossip", "--without-mingle", "--without-heartbeat"]

Show = Callable[[dict[str, Any]], None]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def note(message: str) -> None:
    """A progress line on stderr, for the benchmarks whose stdout is their table."""
    print(message, file=sys.stderr, flush=True)


class EventsPerSecond:
    """For a dataclass row with ``events`` handled in ``seconds``: its :attr:`rate`."""

    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def base_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Only what is given here shapes a benchmark process: the ``UPHOOKS_*`` variables of the
    calling shell are dropped."""
    settings = {
        "key_prefix": PREFIX,
        "log_level": "WARNING",
        # The load generator is one source with many connections; no admin listener.
        "max_connections_per_source": 4096,
        "admin_port": 0,
    }
    env = pipeline_env(redis_url, settings, {"BENCH_REDIS_URL": redis_url}, inherit_settings=False)
    env.update(extra)
    return env


def save_report(report: dict[str, Any], out: Path | None, name: str) -> Path:
    """``report`` as indented JSON in ``out``, or in ``bench/results/<name>-<date>.json``."""
    out = out or RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return out


def finish(report: dict[str, Any], out: Path | None, name: str, show: Show) -> int:
    """The end of a benchmark's ``main``: keep the report (:func:`save_report`), ``show`` it,
    say where it is kept (and how long the run took); 0, the exit status."""
    path = save_report(report, out, name)
    show(report)
    took = f"  ({report['elapsed_s']} s)" if "elapsed_s" in report else ""
    print(f"\nJSON: {path}{took}")
    return 0
