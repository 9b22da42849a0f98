"""What the machine a run ran on is: its CPU model and the Redis server it runs, for reports."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from harness.redis import find_redis_server


def cpu_model(unknown: str = "?") -> str:
    """The ``model name`` line of ``/proc/cpuinfo`` (``unknown`` when there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return unknown


def redis_server_version() -> str:
    """What ``redis-server --version`` prints (the server a run starts, not one it connects to)."""
    return subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
