"""``rediss://``: the ingress, the CLI and the worker on a Redis that speaks only TLS.

The server's certificate comes from a CA the test makes with openssl; the pipeline reaches it
with the URL form the README documents: ``rediss://HOST:PORT/0?ssl_cert_reqs=required&
ssl_ca_certs=/path/ca.pem``. Handler runs are counted (``tests.plugins.killable``), not effects.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Ingress, Stack, Worker, fixture_bodies, wait_for
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer
from workers.app import create_celery
from workers.transport import Transport

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("openssl")),
    reason="needs redis-server built with TLS (Debian's is) and openssl",
)

KILLABLE = "tests.plugins.killable"
# A short visibility timeout, so the copy of a message whose acknowledgement was lost with its
# connection comes back within the test, and the test can see it run nothing.
SHORT_TIMEOUTS = {
    "UPHOOKS_VISIBILITY_TIMEOUT_SECONDS": "8",
    "UPHOOKS_TASK_TIME_LIMIT_SECONDS": "4",
    "UPHOOKS_TASK_SOFT_TIME_LIMIT_SECONDS": "3",
    "UPHOOKS_RETRY_HOP_SECONDS": "2",
    "UPHOOKS_RESTORE_SWEEP_SECONDS": "1",
    "UPHOOKS_BUILTIN_LOG_HANDLER": "false",
}


def make_certificates(folder: Path) -> None:
    """``ca.pem`` of a CA of our own, and ``server.pem``/``server.key`` it signed for 127.0.0.1."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    openssl = ["openssl", "req", "-x509", *ec]
    ca = ["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=uphooks test CA"]
    server = ["-keyout", "server.key", "-out", "server.pem", "-subj", "/CN=localhost"]
    server += ["-CA", "ca.pem", "-CAkey", "ca.key"]
    server += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    server += ["-addext", "basicConstraints=critical,CA:FALSE"]
    server += ["-addext", "extendedKeyUsage=serverAuth"]
    for args in (ca, server):
        subprocess.run([*openssl, *args], cwd=folder, check=True, capture_output=True)


class TlsRedisServer(RedisServer):
    """redis-server with its plain port off and a TLS port; clients need no certificate."""

    @property
    def ca(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def bare_url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        return f"{self.bare_url}?ssl_cert_reqs=required&ssl_ca_certs={self.ca}"

    def command(self) -> list[str]:
        args = super().command()
        args[args.index("--port") + 1] = "0"
        tls = ["--tls-port", str(self.port), "--tls-auth-clients", "no"]
        for option, name in (("cert", "server.pem"), ("key", "server.key"), ("ca-cert", "ca.pem")):
            tls += [f"--tls-{option}-file", str(self.data_dir / name)]
        return [*args, *tls]

    def start(self, timeout: float = 10.0) -> TlsRedisServer:
        if not self.ca.exists():
            make_certificates(self.data_dir)
        super().start(timeout)
        return self


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("tls-redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(tls_redis: TlsRedisServer) -> str:
    """Overrides conftest's: every ``stack`` in this module talks to the TLS server."""
    return tls_redis.url


def runs(stack: Stack, key: str, handler: str = "test.killable") -> int:
    return int(stack.client().get(f"{stack.prefix}:test:runs:{key}:{handler}") or 0)


def handled(stack: Stack, key: str, handler: str = "test.killable") -> bool:
    return stack.client().hget(f"{stack.prefix}:handled:{key}", handler) == b"done"


def post_new(ingress: Ingress, n: int, retry_for: float = 0.0) -> str:
    """Post a distinct upload_completed delivery (its own delivery id) and return its key.

    A 503 is posted again for up to ``retry_for`` seconds, as the sender retries it.
    """
    headers = {"X-Upload-Post-Delivery": f"tls-{n}"}
    deadline = time.monotonic() + retry_for
    while True:
        response = ingress.post(fixture_bodies()["upload_completed.json"], headers)
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 202, response.text
    key: str = response.json()["idempotency_key"]
    return key


def drop_connections(client: redis.Redis, keep: set[int]) -> list[dict[str, str]]:
    """Close, from the server's side, every client connection not in ``keep`` (nor ours)."""
    keep = keep | {int(client.client_id())}
    dropped = [c for c in client.client_list() if int(c["id"]) not in keep]
    for conn in dropped:
        client.client_kill_filter(_id=conn["id"])
    return dropped


def assert_alive(worker: Worker) -> None:
    log = worker.log.read_text(errors="replace")
    assert worker.proc.poll() is None, log[-3000:]
    assert "Unrecoverable error" not in log
    # Celery names the transport it connected with: ours (workers/transport.py), not kombu's.
    assert "Connected to workers.transport:Transport://" in log


def test_a_delivery_over_tls_is_handled_exactly_once_and_the_cli_reads_the_same_redis(
    stack: Stack,
) -> None:
    ingress = stack.ingress()
    stack.worker(KILLABLE, "-c", "1", UPHOOKS_BUILTIN_LOG_HANDLER="false")
    key = post_new(ingress, 1)
    wait_for(lambda: handled(stack, key), what="the handler's outcome recorded")
    assert runs(stack, key) == 1

    status = stack.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    assert f'"{stack.queue}": 0' in status.stdout
    shown = stack.cli("events", "show", key, "--json")
    assert shown.returncode == 0, shown.stderr
    assert "test.killable" in shown.stdout


def test_worker_outlives_broker_connections_dropped_while_idle_and_while_a_handler_runs(
    stack: Stack,
) -> None:
    stack.extra_env.update(SHORT_TIMEOUTS)
    ingress = stack.ingress()
    client = stack.client()
    first = post_new(ingress, 1)
    # Everything connected now is the test's or the ingress's; what connects later is the worker's.
    before_worker = {int(c["id"]) for c in client.client_list()}
    worker = stack.worker(KILLABLE, "-c", "2")
    wait_for(lambda: handled(stack, first), what="the first delivery handled")

    # Idle: the worker waits in BRPOP on its broker connection.
    wait_for(lambda: any(c["cmd"] == "brpop" for c in client.client_list()), what="worker idle")
    dropped = drop_connections(client, before_worker)
    assert any(c["cmd"] == "brpop" for c in dropped)
    second = post_new(ingress, 2)
    wait_for(lambda: handled(stack, second), timeout=30, what="a delivery after the idle drop")
    assert_alive(worker)

    # Busy: the handler is running when its worker's connections go.
    running = f"{stack.prefix}:test:running:hold_before"  # set by every run: clear it first
    client.delete(running)
    client.set(f"{stack.prefix}:test:ctl:hold_before", 1)
    third = post_new(ingress, 3)
    wait_for(lambda: client.get(running), what="the third delivery's handler running")
    assert drop_connections(client, before_worker)
    client.delete(f"{stack.prefix}:test:ctl:hold_before")
    wait_for(lambda: handled(stack, third), timeout=30, what="the held handler finished")
    fourth = post_new(ingress, 4)
    wait_for(lambda: handled(stack, fourth), timeout=30, what="a delivery after the busy drop")

    # The message whose acknowledgement went with its connection is restored after the
    # visibility timeout and delivered again: wait until nothing is left unacknowledged or queued.
    wait_for(
        lambda: client.hlen("unacked") == 0 and client.llen(stack.queue) == 0,
        timeout=45,
        what="every message acknowledged",
    )
    assert [runs(stack, k) for k in (first, second, third, fourth)] == [1, 1, 1, 1]
    assert_alive(worker)


def test_a_rediss_url_without_ssl_options_verifies_the_server_in_the_worker_as_in_the_ingress(
    tls_redis: TlsRedisServer,
) -> None:
    # The test's CA is not among the system's: both must refuse the server, not skip the check
    # (kombu's own default) or talk plain text to a TLS port (its default under our transport).
    bare = tls_redis.bare_url
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis.Redis.from_url(bare, socket_connect_timeout=2).ping()
    app = create_celery(Settings(redis_url=bare))
    with app.connection_for_write() as conn, pytest.raises(Exception) as refused:
        conn.ensure_connection(max_retries=0)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}

    # With the options, the worker's connection is TLS, checked against our CA, on our transport.
    app = create_celery(Settings(redis_url=tls_redis.url))
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=0)
        assert isinstance(conn.transport, Transport)
        assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(tls_redis.ca)}
        assert conn.default_channel.client.ping()


def test_worker_outlives_the_tls_redis_restarting_while_a_handler_runs(
    stack: Stack, tls_redis: TlsRedisServer
) -> None:
    # Longer limits than SHORT_TIMEOUTS: the handler sleeps 3 s and Redis is away for 2 s of it.
    stack.extra_env.update(
        SHORT_TIMEOUTS,
        UPHOOKS_VISIBILITY_TIMEOUT_SECONDS="12",
        UPHOOKS_TASK_TIME_LIMIT_SECONDS="6",
        UPHOOKS_TASK_SOFT_TIME_LIMIT_SECONDS="5",
        # A lease long beside the outage, as in production (30 s against a restart of seconds):
        # the process fences itself only after 2/3 of a lease without a renewal reaching Redis
        # (workers/leases.py), which a 2 s restart must not trigger.
        UPHOOKS_LEASE_SECONDS="12",
    )
    ingress = stack.ingress()
    worker = stack.worker("tests.plugins.sleeping", "-c", "2")
    client = stack.client()
    held = post_new(ingress, 1)
    wait_for(lambda: client.get(f"{stack.prefix}:test:running"), what="the handler running")
    tls_redis.kill()
    time.sleep(2)
    tls_redis.start()

    after = post_new(ingress, 2, retry_for=20)
    sleeping = "test.sleeping"
    for key in (held, after):
        wait_for(lambda k=key: handled(stack, k, sleeping), timeout=30, what=f"{key} handled")
    wait_for(
        lambda: client.hlen("unacked") == 0 and client.llen(stack.queue) == 0,
        timeout=45,
        what="every message acknowledged",
    )
    assert [runs(stack, k, sleeping) for k in (held, after)] == [1, 1]
    assert_alive(worker)
