"""What the run ran on, for the report."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from harness.machine import cpu_model, redis_server_version


def describe() -> dict[str, Any]:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(unknown=""),
        "memory_total": meminfo.get("MemTotal", "").strip(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": redis_server_version(),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "redis-py": version("redis"),
        "uvicorn": version("uvicorn"),
    }
