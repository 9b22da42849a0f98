"""Forged, replayed, rotated, oversized and garbage deliveries against the ingress and real Redis.

Most tests drive ``create_app(Settings(...))`` through Starlette's TestClient (which runs the
lifespan, so the real Enqueuer writes to the real Redis of the ``redis_url`` fixture); the ones
about the process itself (start-up, logs, slow clients, concurrency) start a real uvicorn through
the ``stack`` fixture. Every test checks the status code *and* what reached Redis: the delivery
records under the test's key prefix and the deliveries named by the Celery messages on its queue.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient

from receiver.app import create_admin_app, create_app
from tests.conftest import Stack, fixture_bodies, wait_for
from uphooks.settings import Settings

PATH = "/webhooks/upload-post"
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
TOKEN = "tok_" + "t" * 28
BODY = fixture_bodies()["upload_completed.json"]
JSON = {"Content-Type": "application/json"}


def signed(body: bytes, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    """Headers as the sender makes them, computed here by hand."""
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        **JSON,
        "X-Upload-Post-Timestamp": str(ts),
        "X-Upload-Post-Signature": f"sha256={mac}",
    }


def sw_signed(body: bytes, msg_id: str, secret: str = SECRET) -> dict[str, str]:
    ts = int(time.time())
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        **JSON,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


@dataclass
class Ingress:
    """One in-process ingress with its own key prefix and queue on the shared Redis."""

    client: TestClient
    redis: redis.Redis
    prefix: str

    def post(
        self, body: bytes, headers: dict[str, str] | None = None, path: str = PATH
    ) -> httpx.Response:
        return self.client.post(path, content=body, headers=headers or {})  # type: ignore[return-value]

    def stored(self) -> set[str]:
        """Delivery keys with a stored record."""
        marker = f"{self.prefix}:delivery:"
        return {k.decode()[len(marker) :] for k in self.redis.scan_iter(marker + "*", count=1000)}

    def queued(self) -> list[str]:
        """Delivery keys named by the Celery messages on the queue, in order, repeats kept."""
        keys: list[str] = []
        for raw in reversed(self.redis.lrange(f"{self.prefix}-q", 0, -1)):
            args = json.loads(json.loads(raw)["body"])[0]
            keys.extend(args[0])
        return keys

    def record(self, key: str) -> dict[str, Any]:
        raw = self.redis.get(f"{self.prefix}:delivery:{key}")
        assert raw is not None
        return dict(json.loads(raw))

    def nothing_kept(self) -> bool:
        return self.stored() == set() and self.queued() == []


@dataclass
class Ingresses:
    redis_url: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    opened: list[TestClient] = field(default_factory=list)

    def __call__(self, client: tuple[str, int] = ("127.0.0.1", 40000), **overrides: Any) -> Ingress:
        values: dict[str, Any] = {
            "redis_url": self.redis_url,
            "key_prefix": self.prefix,
            "queue": f"{self.prefix}-q",
            "verify": ["upload-post"],
            "secrets": [SECRET],
            # These tests are about each refusal's answer; throttling has tests/test_edge.py.
            "refusal_burst": 1_000_000,
        }
        values.update(overrides)
        test_client = TestClient(create_app(Settings(**values)), client=client)
        test_client.__enter__()
        self.opened.append(test_client)
        return Ingress(test_client, redis.Redis.from_url(self.redis_url), self.prefix)

    def close(self) -> None:
        for test_client in self.opened:
            test_client.__exit__(None, None, None)
        self.opened.clear()


@pytest.fixture
def ingresses(redis_url: str) -> Iterator[Ingresses]:
    made = Ingresses(redis_url)
    try:
        yield made
    finally:
        made.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{made.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def ingress(ingresses: Ingresses) -> Ingress:
    return ingresses()


# -- the matrix: upload-post signatures --------------------------------------------------------


def test_valid_signature_is_kept_and_queued_once(ingress: Ingress) -> None:
    response = ingress.post(BODY, signed(BODY))
    assert response.status_code == 202, response.text
    key = response.json()["idempotency_key"]
    assert ingress.stored() == {key}
    assert ingress.queued() == [key]
    record = ingress.record(key)
    assert record["body"] == BODY.decode()
    assert record["headers"]["x-upload-post-signature"].startswith("sha256=")


def test_one_changed_body_byte_is_refused_and_nothing_is_kept(ingress: Ingress) -> None:
    headers = signed(BODY)
    tampered = BODY.replace(b'"success": true', b'"success": frue')
    assert tampered != BODY and len(tampered) == len(BODY)
    response = ingress.post(tampered, headers)
    assert response.status_code == 503
    assert "matches none" in response.json()["detail"]
    assert ingress.nothing_kept()


def test_wrong_secret_is_503_by_default_and_401_when_configured(ingresses: Ingresses) -> None:
    retrying = ingresses()
    response = retrying.post(BODY, signed(BODY, secret=NEW_SECRET))
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    final = ingresses(verify_mismatch_status=401)
    assert final.post(BODY, signed(BODY, secret=NEW_SECRET)).status_code == 401
    assert retrying.nothing_kept()


@pytest.mark.parametrize(
    ("age", "status"),
    [(86_400 + 60, 401), (3 * 86_400, 401), (-600, 503)],
    ids=["a-day-old", "three-days-old", "ten-minutes-ahead"],
)
def test_timestamp_outside_the_window_is_refused_and_nothing_is_kept(
    ingress: Ingress, age: int, status: int
) -> None:
    response = ingress.post(BODY, signed(BODY, ts=int(time.time()) - age))
    assert response.status_code == status
    assert ingress.nothing_kept()


def test_a_late_retry_inside_the_tolerance_is_kept_and_reported(
    ingress: Ingress, caplog: pytest.LogCaptureFixture
) -> None:
    # The sender retries for ~8.5 h and may not refresh the timestamp: such a retry must pass,
    # and the log says what it shows about the sender (the open question of delivery-facts.md).
    with caplog.at_level(logging.WARNING, logger="uphooks.receiver"):
        response = ingress.post(BODY, signed(BODY, ts=int(time.time()) - 9 * 3600))
    assert response.status_code == 202
    assert ingress.queued() == [response.json()["idempotency_key"]]
    assert "does not refresh the signature timestamp on retries" in caplog.text


def test_rotation_old_and_new_secret_are_both_accepted(ingresses: Ingresses) -> None:
    ingress = ingresses(secrets=[SECRET, NEW_SECRET])
    other = BODY.replace(b"instagram", b"tiktok")
    old = ingress.post(BODY, signed(BODY, secret=SECRET))
    new = ingress.post(other, signed(other, secret=NEW_SECRET))
    assert (old.status_code, new.status_code) == (202, 202)
    keys = [old.json()["idempotency_key"], new.json()["idempotency_key"]]
    assert ingress.stored() == set(keys)
    assert sorted(ingress.queued()) == sorted(keys)


def test_rotation_before_our_config_knows_the_new_secret_loses_nothing(
    ingresses: Ingresses, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider rotates first: its deliveries get 503, are retried, and pass once added."""
    before = ingresses(secrets=[SECRET])
    headers = signed(BODY, secret=NEW_SECRET)
    with caplog.at_level(logging.WARNING, logger="uphooks.receiver"):
        first_try = before.post(BODY, headers)
    assert first_try.status_code == 503
    assert before.nothing_kept()
    assert "add the new one to UPHOOKS_SECRETS" in caplog.text
    assert SECRET not in caplog.text and NEW_SECRET not in caplog.text

    # The operator adds the new secret and restarts; the sender's retry carries the same bytes.
    after = ingresses(secrets=[SECRET, NEW_SECRET])
    retry = after.post(BODY, headers)
    assert retry.status_code == 202
    assert after.queued() == [retry.json()["idempotency_key"]]


@pytest.mark.parametrize(
    "headers",
    [
        JSON,
        {**JSON, "X-Upload-Post-Timestamp": str(int(time.time()))},
        {**JSON, "X-Upload-Post-Signature": "sha256=" + "0" * 64},
    ],
    ids=["no-headers", "no-signature", "no-timestamp"],
)
def test_missing_headers_are_401_and_nothing_is_kept(
    ingress: Ingress, headers: dict[str, str]
) -> None:
    response = ingress.post(BODY, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert ingress.nothing_kept()


@pytest.mark.parametrize(
    "change",
    [
        {"X-Upload-Post-Signature": "sha256=not-hex"},
        {"X-Upload-Post-Signature": "md5=0123"},
        {"X-Upload-Post-Signature": "sha256=" + "a" * 63},
        {"X-Upload-Post-Timestamp": "yesterday"},
        {"X-Upload-Post-Timestamp": "1" * 400},
        {"X-Upload-Post-Timestamp": "-1"},
    ],
    ids=["sig-not-hex", "sig-wrong-algo", "sig-short", "ts-text", "ts-huge", "ts-negative"],
)
def test_malformed_headers_are_401_and_nothing_is_kept(
    ingress: Ingress, change: dict[str, str]
) -> None:
    response = ingress.post(BODY, {**signed(BODY), **change})
    assert response.status_code == 401
    assert ingress.nothing_kept()


def test_replay_inside_the_window_is_a_duplicate_and_not_queued_twice(ingress: Ingress) -> None:
    headers = signed(BODY)
    first = ingress.post(BODY, headers)
    replay = ingress.post(BODY, headers)
    # The delivery id header is not signed: changing it must not make the replay new.
    forged_id = ingress.post(BODY, {**headers, "X-Upload-Post-Delivery": "dlv_forged"})
    assert [r.status_code for r in (first, replay, forged_id)] == [202, 200, 200]
    key = first.json()["delivery_key"]
    assert (
        replay.json()
        == forged_id.json()
        == {
            "status": "duplicate",
            "delivery_key": key,
            "idempotency_key": key,
            "duplicate": True,
        }
    )
    assert ingress.stored() == {key}
    assert ingress.queued() == [key]


# -- standard-webhooks and token ---------------------------------------------------------------


def test_standard_webhooks_signed_id_is_the_idempotency_key(ingresses: Ingresses) -> None:
    ingress = ingresses(verify=["standard-webhooks"])
    headers = sw_signed(BODY, "msg_2b7f")
    first = ingress.post(BODY, headers)
    replay = ingress.post(BODY, headers)
    forged = ingress.post(BODY, {**headers, "webhook-id": "msg_other"})
    bad_b64 = ingress.post(BODY, {**headers, "webhook-signature": "v1,%%%not-base64%%%"})
    assert [r.status_code for r in (first, replay, forged, bad_b64)] == [202, 200, 503, 401]
    assert first.json()["idempotency_key"] == "d:msg_2b7f"
    assert ingress.stored() == {"d:msg_2b7f"}
    assert ingress.queued() == ["d:msg_2b7f"]


def test_token_in_the_path_or_a_header_and_never_stored(ingresses: Ingresses) -> None:
    ingress = ingresses(verify=["token"], secrets=[TOKEN])
    other = BODY.replace(b"instagram", b"youtube")
    by_path = ingress.post(BODY, JSON, path=f"{PATH}/{TOKEN}")
    by_header = ingress.post(other, {**JSON, "X-Uphooks-Token": TOKEN})
    wrong = ingress.post(BODY, JSON, path=f"{PATH}/{TOKEN}x")
    missing = ingress.post(BODY, JSON)
    assert [r.status_code for r in (by_path, by_header, wrong, missing)] == [202, 202, 401, 401]
    keys = {by_path.json()["idempotency_key"], by_header.json()["idempotency_key"]}
    assert ingress.stored() == keys
    for key in keys:
        assert TOKEN not in json.dumps(ingress.record(key))


def test_a_path_token_is_not_a_route_unless_token_mode_is_on(ingress: Ingress) -> None:
    assert ingress.post(BODY, signed(BODY), path=f"{PATH}/{TOKEN}").status_code == 404
    assert ingress.nothing_kept()


# -- hostile and broken input, all signed so they reach the body checks ------------------------


def test_body_over_the_limit_by_content_length_is_413(ingresses: Ingresses) -> None:
    ingress = ingresses(max_body_bytes=1000)
    body = b'{"event":"x","pad":"' + b"a" * 2000 + b'"}'
    response = ingress.post(body, signed(body))
    assert response.status_code == 413
    assert ingress.nothing_kept()


@pytest.mark.parametrize("length", ["abc", "-1", "10, 20", "9" * 40])
def test_malformed_content_length_is_400(ingress: Ingress, length: str) -> None:
    response = ingress.post(BODY, {**signed(BODY), "Content-Length": length})
    assert response.status_code == 400
    assert ingress.nothing_kept()


def test_wrong_content_type_is_415(ingress: Ingress) -> None:
    response = ingress.post(
        BODY, {**signed(BODY), "Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    assert ingress.nothing_kept()


@pytest.mark.parametrize(
    "body",
    [
        b'{"event":"x","a":' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"event":"x","a":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"event":"x","a":' + b'{"b":' * 200 + b"1" + b"}" * 200 + b"}",
        b'{"event":"\xff\xfe"}',
        b"\xef\xbb\xbf{}",
        b'{"event":"\\ud800"}',
        b'{"event":"x","n":1e999}',
        b'{"event":"x","n":NaN}',
        b'{"event":"x"',
        b"",
        b"null",
        b'{"event": 5}',
    ],
    ids=[
        "nested-300",
        "nested-5000",
        "nested-objects",
        "not-utf8",
        "bom",
        "lone-surrogate",
        "infinite-number",
        "nan",
        "truncated",
        "empty",
        "null",
        "event-not-a-string",
    ],
)
def test_broken_json_is_400_never_500(ingress: Ingress, body: bytes) -> None:
    response = ingress.post(body, signed(body))
    assert response.status_code == 400, response.text
    assert ingress.nothing_kept()


def test_a_flood_of_headers_is_answered_not_crashed(ingress: Ingress) -> None:
    headers = [(f"x-junk-{i}", "v" * 50) for i in range(500)]
    headers += list(signed(BODY).items())
    headers += [("X-Upload-Post-Signature", "sha256=" + "0" * 64)] * 20
    response = ingress.client.post(PATH, content=BODY, headers=headers)
    assert response.status_code == 202  # the valid signature is among the first eight read
    assert len(ingress.queued()) == 1


def test_readiness_says_redis_is_down_without_describing_it(ingresses: Ingresses) -> None:
    from uphooks_cli.embedded import free_port

    down = ingresses(redis_url=f"redis://127.0.0.1:{free_port()}/0", ack_timeout_seconds=0.5)
    public = down.client.app
    assert isinstance(public, Starlette)
    assert down.client.get("/readyz").status_code == 404  # the admin listener's, not public
    response = TestClient(create_admin_app(public.state.settings, public)).get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "redis": "unreachable"}
    refused = down.post(BODY, signed(BODY))
    assert refused.status_code == 503 and refused.headers["Retry-After"]


# -- source networks ---------------------------------------------------------------------------


def test_allow_list_refuses_other_sources_with_403(ingresses: Ingresses) -> None:
    outsider = ingresses(client=("203.0.113.7", 5000), allowed_networks="198.51.100.0/24")
    response = outsider.post(BODY, signed(BODY))
    assert response.status_code == 403
    spoofed = outsider.post(BODY, {**signed(BODY), "X-Forwarded-For": "198.51.100.1"})
    assert spoofed.status_code == 403
    assert outsider.nothing_kept()


def test_allow_list_behind_a_trusted_proxy_reads_x_forwarded_for(ingresses: Ingresses) -> None:
    proxied = ingresses(
        client=("10.0.0.5", 5000),
        allowed_networks="198.51.100.0/24",
        trusted_proxies="10.0.0.0/8",
    )
    allowed = proxied.post(BODY, {**signed(BODY), "X-Forwarded-For": "192.0.2.9, 198.51.100.1"})
    forged_left = proxied.post(BODY, {**signed(BODY), "X-Forwarded-For": "198.51.100.1, 192.0.2.9"})
    assert (allowed.status_code, forged_left.status_code) == (202, 403)
    assert proxied.queued() == [allowed.json()["idempotency_key"]]


# -- the real process --------------------------------------------------------------------------


def _log(stack: Stack, url: str) -> str:
    port = url.rsplit(":", 1)[1]
    return (stack.tmp / f"ingress-{port}.log").read_text(errors="replace")


def test_signing_mode_without_secrets_refuses_to_start(stack: Stack) -> None:
    with pytest.raises(RuntimeError, match="ingress did not start"):
        stack.ingress(UPHOOKS_VERIFY="upload-post", UPHOOKS_SECRETS="")
    [log] = stack.tmp.glob("ingress-*.log")
    assert "needs UPHOOKS_SECRETS" in log.read_text()


def test_secrets_and_path_tokens_stay_out_of_the_logs(stack: Stack) -> None:
    ingress = stack.ingress(
        UPHOOKS_VERIFY="upload-post,token", UPHOOKS_SECRETS=SECRET, UPHOOKS_TOKENS=TOKEN
    )
    assert ingress.post(BODY, signed(BODY, secret=NEW_SECRET)).status_code == 503
    assert httpx.post(f"{ingress.url}{PATH}/{TOKEN}", content=BODY, headers=JSON).status_code == 202
    assert httpx.post(f"{ingress.url}{PATH}/{TOKEN}", content=BODY, headers=JSON).status_code == 200
    wait_for(lambda: f"{PATH}/***" in _log(stack, ingress.url), what="the access log line")
    log = _log(stack, ingress.url)
    assert "add the new one to UPHOOKS_SECRETS" in log
    for secret in (SECRET, NEW_SECRET, TOKEN, SECRET.removeprefix("whsec_")):
        assert secret not in log
    assert len(stack.client().lrange(stack.queue, 0, -1)) == 1


def _open_request(url: str, length: int) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
        + b"{"
    )
    return sock


def _read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_chunked_body_over_the_limit_is_413_while_it_is_still_streaming(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="none", UPHOOKS_MAX_BODY_BYTES="1000")
    host, port = ingress.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(11):  # 1,100 bytes, never finished: no terminating chunk is sent
            sock.sendall(b"64\r\n" + b"a" * 100 + b"\r\n")
        assert _read_status(sock) == 413
    assert list(stack.client().scan_iter(f"{stack.prefix}:*")) == []


def test_concurrency_limit_answers_503_at_once_and_frees_its_slots(stack: Stack) -> None:
    ingress = stack.ingress(UPHOOKS_VERIFY="none", UPHOOKS_MAX_CONCURRENT_REQUESTS="2")
    assert "UPHOOKS_VERIFY=none: deliveries are NOT verified" in _log(stack, ingress.url)
    bodies = [json.dumps({"event": "slow", "n": i}).encode() for i in range(2)]
    # Two slow clients hold both slots: headers sent, body not finished.
    slow = [_open_request(ingress.url, len(b)) for b in bodies]
    try:
        probe = b'{"event":"probe"}'
        wait_for(lambda: ingress.post(probe).status_code == 503, what="the limit to be reached")
        started = time.monotonic()
        refused = ingress.post(probe)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert time.monotonic() - started < 1  # answered at once, not queued
        assert stack.client().llen(stack.queue) == 0
        for sock, body in zip(slow, bodies, strict=True):
            sock.sendall(body[1:])
        assert [_read_status(s) for s in slow] == [202, 202]
    finally:
        for sock in slow:
            sock.close()
    assert ingress.post(probe).status_code == 202
    stored = list(stack.client().scan_iter(f"{stack.prefix}:delivery:*"))
    assert len(stored) == 3


# -- property: whatever arrives, no 500 and nothing kept unless accepted ----------------------

_HEADER_NAMES = [
    "content-type",
    "content-length",
    "x-upload-post-signature",
    "x-upload-post-timestamp",
    "x-upload-post-delivery",
    "x-upload-post-event",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-uphooks-token",
    "x-forwarded-for",
    "user-agent",
]
_header_values = st.one_of(
    # Anything a client can put in a header (no CR, LF or NUL)...
    st.binary(max_size=80).map(
        lambda b: bytes(c for c in b if c == 9 or 32 <= c <= 126 or c >= 128)
    ),
    # ...and values shaped like the real thing, so later checks are reached too.
    st.binary(min_size=32, max_size=32).map(lambda b: b"sha256=" + b.hex().encode()),
    st.binary(min_size=32, max_size=32).map(lambda b: b"v1," + base64.b64encode(b)),
    st.integers(-(10**6), 10**6).map(lambda d: str(int(time.time()) + d).encode()),
    st.integers(0, 10**18).map(lambda n: str(n).encode()),
)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_bodies = st.one_of(
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"event": st.text(max_size=20)}, optional={"job_id": st.text(max_size=8), "x": _json_values}
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from(sorted(fixture_bodies().values())),
)


def test_random_requests_never_get_a_500_and_refused_ones_leave_nothing(
    ingresses: Ingresses,
) -> None:
    ingress = ingresses(
        verify=["upload-post", "standard-webhooks", "token"], secrets=[SECRET], tokens=[TOKEN]
    )
    seen: Counter[int] = Counter()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(
        body=_bodies,
        headers=st.lists(st.tuples(st.sampled_from(_HEADER_NAMES), _header_values), max_size=6),
        sign=st.sampled_from(["no", "upload-post", "stale", "wrong-secret", "token"]),
        content_type=st.sampled_from(["application/json", "text/plain", "application/xml", ""]),
    )
    def one_request(
        body: bytes, headers: list[tuple[str, bytes]], sign: str, content_type: str
    ) -> None:
        sent: list[tuple[str, str | bytes]] = [("content-type", content_type)]
        if sign == "upload-post":
            sent += list(signed(body).items())[1:]
        elif sign == "stale":
            sent += list(signed(body, ts=int(time.time()) - 2 * 86_400).items())[1:]
        elif sign == "wrong-secret":
            sent += list(signed(body, secret=NEW_SECRET).items())[1:]
        elif sign == "token":
            sent.append(("x-uphooks-token", TOKEN))
        sent += headers
        before_stored, before_queued = ingress.stored(), ingress.queued()

        # TestClient re-raises what the app let escape, so a crash fails here as well.
        response = ingress.client.post(PATH, content=body, headers=sent)

        seen[response.status_code] += 1
        assert response.status_code in (200, 202, 400, 401, 413, 415, 503), response.text
        if response.status_code == 202:
            key = response.json()["idempotency_key"]
            assert ingress.stored() == before_stored | {key}
            assert ingress.queued()[len(before_queued) :] == [key]
        else:
            assert ingress.stored() == before_stored
            assert ingress.queued() == before_queued

    one_request()
    # The run did reach every stage: accepted, duplicate, bad JSON, unverified, wrong type, size.
    assert {200, 202, 400, 401, 413, 415, 503} <= set(seen), seen
