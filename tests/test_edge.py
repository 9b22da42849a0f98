"""The internet-facing edge, with real ingress processes on loopback: only webhooks on the public
listener, slow clients cut within their deadlines, connection caps, throttled refusals, the 413
that reaches a client sending 20 MB with ``Connection: close``.

Loopback has a whole /8: clients bind 127.0.0.2, 127.0.0.3, ... to be different sources.
"""

from __future__ import annotations

import asyncio
import base64
import resource
import socket
import statistics
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PATH, Ingress, Stack, wait_for
from uphooks_cli import simulate

SECRET = "whsec_" + base64.b64encode(b"e" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
SIGNED = {"UPHOOKS_VERIFY": "upload-post", "UPHOOKS_SECRETS": SECRET}


def closed_by_reason(ingress: Ingress) -> dict[str, float]:
    text = httpx.get(ingress.admin_url + "/metrics", timeout=10).text
    return {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "uphooks_ingress_connections_closed_total"
    }


def valid(n: int, seed: int) -> list[simulate.Prepared]:
    return simulate.prepare("upload_completed", n, secret=SECRET, seed=seed)


# -- two listeners ------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", ["1", "2"])
def test_the_public_listener_serves_webhooks_only_and_the_admin_listener_the_rest(
    stack: Stack, processes: str
) -> None:
    ingress = stack.ingress("--workers", processes, **SIGNED)
    for path in ("/metrics", "/openapi.json", "/readyz"):
        assert httpx.get(ingress.url + path).status_code == 404, path
        assert httpx.get(ingress.admin_url + path).status_code == 200, path
    assert httpx.get(ingress.url + "/healthz").status_code == 200
    [item] = valid(1, seed=1)
    assert ingress.post(item.body, item.headers).status_code == 202
    # The webhook path is not served on the admin listener either.
    on_admin = httpx.post(ingress.admin_url + PATH, content=item.body, headers=item.headers)
    assert on_admin.status_code in (404, 405)
    admin_host = ingress.admin_url.removeprefix("http://").split(":")[0]
    assert admin_host == "127.0.0.1"


def test_an_admin_port_already_taken_stops_the_start_with_what_to_set(stack: Stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="ingress did not start"):
            stack.ingress(UPHOOKS_ADMIN_PORT=str(port), **SIGNED)
    [log] = stack.tmp.glob("ingress-*.log")
    assert f"admin listener cannot use 127.0.0.1:{port}" in log.read_text()
    assert "UPHOOKS_ADMIN_PORT" in log.read_text()


# -- slow clients ------------------------------------------------------------------------------

HEAD = (
    f"POST {PATH} HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: application/json\r\n"
    "Content-Length: 100\r\n\r\n"
).encode()


def signed_head(body: bytes) -> bytes:
    """A head that passes every check made before the body: the server waits for the body."""
    stamp = int(time.time())
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Upload-Post-Timestamp: {stamp}\r\n"
        f"X-Upload-Post-Signature: {simulate.signature(SECRET, stamp, body)}\r\n\r\n"
    ).encode()


@dataclass
class Probe:
    """Slow connections on one event loop, each noting how long the server kept it open."""

    port: int
    held: list[float] = field(default_factory=list)  # seconds from connect to close
    still_open: int = 0
    statuses: list[bytes] = field(default_factory=list)

    async def _trickle(self, source: str, head_first: bool, give_up: float) -> None:
        opened = time.monotonic()  # before connecting: the server's clock starts later
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0)
        )
        if head_first:  # the head at once, then the body a byte every 2 s
            writer.write(signed_head(b"a" * 100))
        data = b"" if head_first else HEAD
        try:
            while time.monotonic() - opened < give_up:
                if data:
                    writer.write(data[:1])
                    data = data[1:]
                elif head_first:
                    writer.write(b"a")
                try:
                    answer = await asyncio.wait_for(reader.read(4096), 2.0)
                except TimeoutError:
                    continue
                self.statuses.append(answer.split(b"\r\n", 1)[0])
                self.held.append(time.monotonic() - opened)
                return
            self.still_open += 1
        except ConnectionError:
            self.held.append(time.monotonic() - opened)
        finally:
            writer.close()

    def slow(
        self, sources: list[str], n: int, head_first: bool, give_up: float
    ) -> list[Awaitable[None]]:
        return [self._trickle(sources[i % len(sources)], head_first, give_up) for i in range(n)]


async def _deliver_meanwhile(
    url: str, items: list[simulate.Prepared], every: float
) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for item in items:
            started = time.monotonic()
            response = await client.post(url + PATH, content=item.body, headers=item.headers)
            results.append((response.status_code, time.monotonic() - started))
            await asyncio.sleep(every)
    return results


def _room_for(descriptors: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < descriptors:
        if hard != resource.RLIM_INFINITY and hard < descriptors:
            pytest.skip(f"needs {descriptors} open files; ulimit -n allows {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, hard))


def test_600_slow_clients_are_cut_at_their_deadlines_while_valid_deliveries_pass(
    stack: Stack,
) -> None:
    _room_for(2000)
    head_s, body_s = 4.0, 6.0
    ingress = stack.ingress(
        UPHOOKS_HEAD_TIMEOUT_SECONDS=str(head_s), UPHOOKS_BODY_TIMEOUT_SECONDS=str(body_s), **SIGNED
    )
    port = int(ingress.url.rsplit(":", 1)[1])
    # 30 sources, 20 slow connections each: under the per-source cap, as a botnet would stay.
    sources = [f"127.0.0.{n}" for n in range(2, 32)]
    probe = Probe(port)
    items = valid(40, seed=2)

    async def attack() -> list[tuple[int, float]]:
        slow = probe.slow(sources, 600, head_first=False, give_up=head_s + 8)
        slow += probe.slow(sources, 100, head_first=True, give_up=body_s + 8)
        *_, delivered = await asyncio.gather(
            *slow, _deliver_meanwhile(ingress.url, items, every=0.25)
        )
        return delivered

    started = time.monotonic()
    delivered = asyncio.run(attack())
    elapsed = time.monotonic() - started

    assert probe.still_open == 0
    assert len(probe.held) == 700
    # Cut at the deadline (plus the 2 s a trickling probe may wait to notice), never before.
    slow_heads, slow_bodies = sorted(probe.held)[:600], sorted(probe.held)[600:]
    assert head_s - 0.1 < min(probe.held)
    assert max(slow_heads) < head_s + 2.5
    assert max(slow_bodies) < head_s + body_s  # the body deadline runs from the head
    assert set(probe.statuses) <= {b"HTTP/1.1 408 Request Timeout", b""}
    codes = [code for code, _ in delivered]
    seconds = [s for _, s in delivered]
    assert codes == [202] * len(items)
    assert statistics.median(seconds) < 0.25 and max(seconds) < 1.0, seconds
    closed = closed_by_reason(ingress)
    assert closed.get("head_timeout", 0) == 600
    assert closed.get("body_timeout", 0) == 100
    print(
        f"\n700 slow connections closed after {min(probe.held):.1f}-{max(probe.held):.1f} s "
        f"(deadlines {head_s:g} s / {head_s:g}+{body_s:g} s); {len(items)} valid deliveries "
        f"meanwhile: median {statistics.median(seconds) * 1000:.0f} ms, "
        f"max {max(seconds) * 1000:.0f} ms; run {elapsed:.1f} s"
    )


def test_connections_past_the_per_source_cap_are_closed_at_once(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_MAX_CONNECTIONS_PER_SOURCE="5", **SIGNED)
    port = int(ingress.url.rsplit(":", 1)[1])
    held = []
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.9", 0))
        held.append(sock)
    try:
        extra = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.9", 0))
        extra.settimeout(5)
        with pytest.raises(ConnectionError):  # reset at once, before any request
            extra.sendall(HEAD)
            if not extra.recv(100):
                raise ConnectionResetError
        extra.close()
        # Another source is not affected.
        [item] = valid(1, seed=3)
        assert ingress.post(item.body, item.headers).status_code == 202
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: closed_by_reason(ingress).get("per_source") == 1, what="the metric")


def test_a_head_larger_than_the_limit_is_answered_431(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_MAX_HEAD_BYTES="4096", **SIGNED)
    [item] = valid(1, seed=4)
    big = {**item.headers, "X-Padding": "p" * 5000}
    assert ingress.post(item.body, big).status_code == 431
    assert ingress.post(item.body, item.headers).status_code == 202


# -- the 413 a client sending too much can read ---------------------------------------------------


def test_a_20_mb_body_with_connection_close_gets_the_413(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="none")
    body = b'{"event":"upload_completed","pad":"' + b"x" * (20 * 1024 * 1024) + b'"}'
    headers = {"Content-Type": "application/json", "Connection": "close"}
    for _ in range(3):  # a reset would show as an exception here, not as a status
        response = httpx.post(ingress.url + PATH, content=body, headers=headers, timeout=30)
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
    assert list(stack.client().scan_iter(f"{stack.prefix}:*")) == []


# -- throttling refused requests -----------------------------------------------------------------


def test_a_source_forging_at_full_speed_is_throttled_while_valid_deliveries_pass(
    stack: Stack,
) -> None:
    ingress = stack.ingress(
        UPHOOKS_REFUSAL_BURST="10", UPHOOKS_REFUSAL_RATE_PER_SECOND="1", **SIGNED
    )
    # Signed with another secret: well formed and fresh, so each costs the HMACs (answered 503
    # while it may be a rotated secret). 50 KB: under UPHOOKS_THROTTLED_BODY_BYTES, so read.
    forged_body = b'{"event":"upload_completed","pad":"' + b"f" * 50_000 + b'"}'
    forged_headers = simulate.headers_for(
        "upload_completed",
        forged_body,
        secret=OTHER_SECRET,
        timestamp=int(time.time()),
        delivery_id="forged",
    )
    attacker = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
    honest = httpx.Client(timeout=10)  # 127.0.0.1
    statuses: list[int] = []
    valid_answers: list[tuple[int, float]] = []
    same_source_valid: list[int] = []
    items = valid(30, seed=5)
    try:
        deadline = time.monotonic() + 6
        i = 0
        while time.monotonic() < deadline:
            statuses.append(
                attacker.post(
                    ingress.url + PATH, content=forged_body, headers=forged_headers
                ).status_code
            )
            if len(statuses) % 5 == 0 and i < len(items):
                started = time.monotonic()
                answer = honest.post(
                    ingress.url + PATH, content=items[i].body, headers=items[i].headers
                )
                valid_answers.append((answer.status_code, time.monotonic() - started))
                i += 1
            if len(statuses) % 25 == 0:
                # A valid delivery from the throttled address itself is still kept.
                [mine] = valid(1, seed=1000 + len(statuses))
                same_source_valid.append(
                    attacker.post(
                        ingress.url + PATH, content=mine.body, headers=mine.headers
                    ).status_code
                )
        throttled = attacker.post(ingress.url + PATH, content=forged_body, headers=forged_headers)
    finally:
        attacker.close()
        honest.close()

    assert statuses[:10] == [503] * 10  # the budget: mismatches answered as usual
    assert set(statuses[10:]) == {429}
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"] == "too_many_refusals"
    assert [code for code, _ in valid_answers] == [202] * len(valid_answers)
    assert same_source_valid and set(same_source_valid) == {202}
    assert max(s for _, s in valid_answers) < 1.0
    print(
        f"\nforged (50 KB, unknown secret) from one source: {len(statuses)} in 6 s, "
        f"{statuses.count(429)} answered 429; {len(valid_answers)} valid from another source "
        f"all 202 (max {max(s for _, s in valid_answers) * 1000:.0f} ms); "
        f"{len(same_source_valid)} valid from the throttled source all 202"
    )


# -- secrets per mode, the signed event name, the masked Redis URL --------------------------------

TOKEN = "tok_" + "k" * 28


def test_a_signing_secret_is_never_accepted_as_a_url_token(stack: Stack) -> None:
    with pytest.raises(RuntimeError, match="ingress did not start"):
        stack.ingress(UPHOOKS_VERIFY="upload-post,token", UPHOOKS_SECRETS=SECRET)
    [log] = stack.tmp.glob("ingress-*.log")
    assert "set UPHOOKS_TOKENS" in log.read_text()

    ingress = stack.ingress(
        UPHOOKS_VERIFY="upload-post,token", UPHOOKS_SECRETS=SECRET, UPHOOKS_TOKENS=TOKEN
    )
    [item] = valid(1, seed=6)
    plain = {"Content-Type": "application/json"}
    as_token = httpx.post(f"{ingress.url}{PATH}/{SECRET}", content=item.body, headers=plain)
    assert as_token.status_code == 401
    in_header = {**plain, "X-Uphooks-Token": SECRET}
    assert ingress.post(item.body, in_header).status_code == 401
    by_token = httpx.post(f"{ingress.url}{PATH}/{TOKEN}", content=item.body, headers=plain)
    assert by_token.status_code == 202
    assert ingress.post(item.body, item.headers).status_code == 200  # signed: the same delivery

    with pytest.raises(RuntimeError, match="ingress did not start"):
        stack.ingress(UPHOOKS_VERIFY="token", UPHOOKS_TOKENS=SECRET)
    assert any("is a signing secret" in p.read_text() for p in stack.tmp.glob("ingress-*.log"))


def test_token_only_mode_still_reads_uphooks_secrets_and_says_to_rename_it(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="token", UPHOOKS_SECRETS=TOKEN)
    [item] = valid(1, seed=7)
    answer = httpx.post(
        f"{ingress.url}{PATH}/{TOKEN}", content=item.body, headers={"Content-Type": "text/json"}
    )
    assert answer.status_code == 202
    port = ingress.url.rsplit(":", 1)[1]
    assert (
        "rename the variable to UPHOOKS_TOKENS" in (stack.tmp / f"ingress-{port}.log").read_text()
    )


def test_an_unsigned_event_header_never_names_a_signed_body(stack: Stack) -> None:
    signed = stack.ingress(**SIGNED)
    body = b'{"job_id":"j-1","platform":"tiktok"}'
    [item] = simulate.prepare("upload_completed", 1, secret=SECRET, body=body)
    assert item.headers["X-Upload-Post-Event"] == "upload_completed"
    refused = signed.post(item.body, item.headers)
    assert refused.status_code == 400
    assert "no 'event'" in refused.json()["detail"]
    # Where the caller is trusted as a whole (token, none), the header still names it.
    trusting = stack.ingress(UPHOOKS_VERIFY="token", UPHOOKS_TOKENS=TOKEN)
    kept = trusting.post(body, {**item.headers, "X-Uphooks-Token": TOKEN})
    assert kept.status_code == 202


def test_the_redis_password_is_never_printed(stack: Stack) -> None:
    from uphooks.settings import Settings

    url = "redis://app:hunter2-redis-password@127.0.0.1:1/0"
    settings = Settings(redis_url=url, verify=["none"])
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert "redis://app:***@127.0.0.1:1/0" in repr(settings)
    # An ingress whose Redis cannot be reached logs why, without the password.
    ingress = stack.ingress(UPHOOKS_REDIS_URL=url, REDIS_URL=url, UPHOOKS_VERIFY="none")
    [item] = valid(1, seed=8)
    assert ingress.post(item.body, item.headers).status_code == 503
    port = ingress.url.rsplit(":", 1)[1]
    log = (stack.tmp / f"ingress-{port}.log").read_text()
    assert "redis" in log.lower() and "hunter2" not in log
    status = stack.cli("status", UPHOOKS_REDIS_URL=url, REDIS_URL=url)
    assert "hunter2" not in status.stdout + status.stderr
