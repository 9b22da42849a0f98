"""The built-in ``forward`` handler against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from handlers import Context, PermanentError, TransientError
from handlers.forward import (
    HANDLER_PREFIX,
    ForwardSettings,
    decode_secret,
    parse_targets,
    router_for,
    sign,
)
from tests.builtins import run_handler
from tests.conftest import Stack, fixture_bodies, wait_for
from tests.plugins.servers import Answer, FakeServer, Seen
from uphooks.errors import ConfigurationError
from uphooks.events import parse_event

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = fixture_bodies()["upload_completed.json"]


def verify(seen: Seen, secret: str = SECRET) -> bool:
    """A receiver's check, written from the Standard Webhooks spec, not from our signer."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg = f"{seen.headers['webhook-id']}.{seen.headers['webhook-timestamp']}.".encode()
    expected = base64.b64encode(hmac.new(key, msg + seen.body, hashlib.sha256).digest())
    return any(
        part.startswith("v1,") and hmac.compare_digest(part[3:].encode(), expected)
        for part in seen.headers["webhook-signature"].split()
    )


def settings(*urls: str, **overrides: Any) -> ForwardSettings:
    values: dict[str, Any] = {
        "urls": list(urls),
        "secret": SECRET,
        "timeout_seconds": 1,
    }
    return ForwardSettings(**(values | overrides))


def forward(url: str, body: bytes = BODY, key: str = "e:abc") -> None:
    [spec] = list(router_for(settings(url)))
    name = spec.name
    ctx = Context(f"{key}:{name}", key, name, 1, "upload_completed", 0.0, body=body.decode())
    run_handler(spec, parse_event(json.loads(body)), ctx)


def test_signature_matches_the_standard_webhooks_example() -> None:
    # The example secret, id, timestamp and payload of the Standard Webhooks reference libraries.
    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_event_is_posted_as_received_and_signed() -> None:
    with FakeServer() as server:
        before = int(time.time())
        forward(server.url + "/hooks/uploads?token=t")
    [seen] = server.requests
    assert seen.path == "/hooks/uploads?token=t"
    assert seen.body == BODY  # the sender's bytes, not a re-serialisation
    assert seen.headers["content-type"] == "application/json"
    target = server.url.removeprefix("http://") + "/hooks/uploads"
    assert seen.headers["webhook-id"] == f"e:abc:{HANDLER_PREFIX}{target}"
    assert before <= int(seen.headers["webhook-timestamp"]) <= time.time()
    assert verify(seen)
    other = base64.b64encode(b"another secret, 32 bytes long!!").decode()
    assert not verify(seen, "whsec_" + other)


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (Answer(500), TransientError, "HTTP 500"),
        (Answer(503, headers={"Retry-After": "30"}), TransientError, "HTTP 503"),
        (Answer(429), TransientError, "HTTP 429"),
        (Answer(408), TransientError, "HTTP 408"),
        (Answer(200, delay=2), TransientError, "no answer within 1s"),
        (Answer(400, b'{"error": "bad"}'), PermanentError, "HTTP 400"),
        (Answer(404), PermanentError, "HTTP 404"),
        (Answer(410), PermanentError, "HTTP 410"),
        (Answer(302, headers={"Location": "/elsewhere"}), PermanentError, "redirects"),
    ],
)
def test_timeouts_and_5xx_are_retried_other_4xx_are_not(
    answer: Answer, error: type[Exception], text: str
) -> None:
    with FakeServer(answer) as server, pytest.raises(error, match=text) as caught:
        forward(server.url + "/hook")
    if answer.status == 503:
        assert isinstance(caught.value, TransientError)
        assert caught.value.retry_after == 30


def test_a_target_that_refuses_connections_is_transient() -> None:
    with FakeServer() as server:
        url = server.url
    started = time.monotonic()
    with pytest.raises(TransientError, match="ConnectError"):
        forward(url + "/hook")
    assert time.monotonic() - started >= 0.2  # tried again in the handler before giving up


def test_each_target_is_a_handler_of_its_own() -> None:
    router = router_for(
        settings("billing=https://billing.internal/hook", "https://crm.internal:8443/in/")
    )
    assert [s.name for s in router] == [
        "uphooks.forward:billing",
        "uphooks.forward:crm.internal:8443/in",
    ]
    assert {s.queue for s in router} == {None}
    queued = router_for(settings("https://a.internal/", queue="outbound"))
    assert [s.queue for s in queued] == ["outbound"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"urls": []}, "UPHOOKS_FORWARD_URLS is empty"),
        ({"urls": ["ftp://files.internal/x"]}, "not an http"),
        ({"urls": ["https://a.internal/x", "https://a.internal/x/"]}, "two targets"),
        ({"secret": None}, "UPHOOKS_FORWARD_SECRET is not set"),
        ({"secret": "plain-secret"}, "whsec_"),
        ({"secret": "whsec_not base64!"}, "not valid base64"),
        ({"secret": "whsec_c2hvcnQ="}, "at least 16"),
    ],
)
def test_bad_settings_stop_the_build(overrides: dict[str, Any], message: str) -> None:
    values = {"urls": ["https://a.internal/hook"]} | overrides
    with pytest.raises(ConfigurationError, match=message):
        router_for(settings(**values))


def test_target_names() -> None:
    targets = parse_targets(["x=https://h/p?secret=1", "https://user:pw@host:81/p?q=1"])
    assert [(t.name, t.url) for t in targets] == [
        ("x", "https://h/p?secret=1"),
        ("host:81/p", "https://user:pw@host:81/p?q=1"),  # no credentials or query in the name
    ]


def test_through_the_pipeline_retried_on_5xx_dead_lettered_on_4xx(stack: Stack) -> None:
    with FakeServer() as good, FakeServer(Answer(422, b"no")) as bad:
        good.answer(Answer(503))
        ingress = stack.ingress()
        stack.worker(
            "handlers.forward",
            UPHOOKS_BUILTIN_LOG_HANDLER="false",
            UPHOOKS_FORWARD_URLS=f"good={good.url}/in,bad={bad.url}/in",
            UPHOOKS_FORWARD_SECRET=SECRET,
            UPHOOKS_FORWARD_EVENTS="upload_completed",
        )
        key = ingress.post(BODY).json()["idempotency_key"]
        assert ingress.post(fixture_bodies()["social_account_connected.json"]).status_code == 202

        wait_for(lambda: len(good.requests) == 2, what="a 503, then the retry")
        entry = f"{stack.prefix}:dlq:{key}|uphooks.forward:bad"
        wait_for(lambda: stack.client().exists(entry), what="the 4xx target dead-lettered")
        first, second = good.requests
        assert first.body == second.body == BODY
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert first.headers["webhook-id"] == f"{key}:uphooks.forward:good"
        assert verify(first) and verify(second)
        assert len(bad.requests) == 1  # a 4xx is not retried
        stack.wait_settled(key, {"uphooks.forward:good": "done", "uphooks.forward:bad": "dead"})
        dead = json.loads(stack.client().get(entry) or b"{}")
        assert "HTTP 422" in dead["error"]
        time.sleep(0.3)
        assert len(good.requests) == 2  # the account event was not forwarded (events filter)
