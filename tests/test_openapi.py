"""The ingress's OpenAPI description, and schemathesis fuzzing the app against it in-process.

The app runs with ``token`` verification so that schemathesis, which cannot compute signatures,
still reaches every stage behind verification (the signed modes are fuzzed by the hypothesis test
in test_ingress_hostile.py). Every answer must be one the description lists, with the body it
describes; generated deliveries really go to Redis under this module's own key prefix.
"""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import given, settings
from schemathesis import Case, GenerationMode
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.app import Listeners, create_listeners
from receiver.openapi import document
from uphooks.settings import Settings

TOKEN = "tok_" + "o" * 28
PREFIX = f"t{uuid.uuid4().hex[:10]}"


def _settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": PREFIX,
        "queue": f"{PREFIX}-q",
        "verify": ["token"],
        "tokens": [TOKEN],
        # Generated path tokens are refused by the hundred: keep this client below the budget.
        "refusal_burst": 100_000,
    }
    return Settings(**(values | overrides))


def both_listeners(listeners: Listeners) -> ASGIApp:
    """The description (admin listener) and the endpoints it describes (public listener) on the
    one origin schemathesis talks to."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        admin = scope["type"] == "http" and scope["path"] in ("/openapi.json", "/readyz")
        await (listeners.admin if admin else listeners.public)(scope, receive, send)

    return app


async def _task_stacks() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    return out.getvalue()


def _end_lifespans(seconds: float = 30.0) -> None:
    """``shutdown_lifespans()``, bounded: a shutdown that never ends fails here with the stacks
    of every task on schemathesis's event loop (what the lifespan waits on), not at the suite's
    timeout with only the threads' stacks."""
    failed: list[BaseException] = []

    def end() -> None:
        try:
            shutdown_lifespans()
        except BaseException as exc:
            failed.append(exc)

    ending = threading.Thread(target=end, name="end-lifespans", daemon=True)
    ending.start()
    ending.join(seconds)
    if ending.is_alive():
        portal = schemathesis_asgi._PORTAL
        stacks = portal.call(_task_stacks) if portal is not None else "(no portal)"
        pytest.fail(f"the app's lifespan did not end within {seconds} s; tasks:\n{stacks}")
    if failed:
        raise failed[0]


@pytest.fixture(scope="module")
def api_schema(redis_url: str) -> Iterator[BaseSchema]:
    app = both_listeners(create_listeners(_settings(redis_url)))
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    _end_lifespans()  # schemathesis started the app's lifespan; end it (closes Redis)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_matches_the_openapi_description(
    api_schema: BaseSchema, mode: GenerationMode
) -> None:
    seen: Counter[tuple[str, int]] = Counter()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(case=api_schema.as_strategy(generation_mode=mode))
    def one_case(case: Case) -> None:
        if case.path.endswith("{token}"):
            # A generated path token is never ours: 401, documented, whatever the data.
            response = case.call()
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
            assert response.status_code == 401
        else:
            response = case.call_and_validate(headers={"x-uphooks-token": TOKEN})
        seen[case.path, response.status_code] += 1

    one_case()
    webhook = {status for path, status in seen if path == "/webhooks/upload-post"}
    # Positive data is kept; negative data is refused (and a valid-looking one is a duplicate).
    expected = {202} if mode is GenerationMode.POSITIVE else {400}
    assert expected <= webhook, seen


def test_the_description_is_served_and_follows_the_settings(redis_url: str) -> None:
    signed = _settings(
        redis_url,
        verify=["upload-post", "standard-webhooks"],
        secrets=["whsec_" + "QUJD" * 11],
        allowed_networks="10.0.0.0/8",
    )
    listeners = create_listeners(signed)
    with TestClient(listeners.admin) as client:
        served = client.get("/openapi.json").json()
    assert served == document(signed)
    assert TestClient(listeners.public).get("/openapi.json").status_code == 404
    post = served["paths"]["/webhooks/upload-post"]["post"]
    assert set(post["responses"]) == {
        "200", "202", "400", "401", "403", "413", "415", "429", "503"
    }  # fmt: skip
    assert post["security"] == [{"uploadPost": []}, {"standardWebhooks": []}]
    headers = {p["name"] for p in post["parameters"]}
    assert {"X-Upload-Post-Timestamp", "webhook-id", "webhook-timestamp"} <= headers
    assert "/webhooks/upload-post/{token}" not in served["paths"]

    development = _settings(redis_url, verify=["none"], serve_openapi=False)
    assert "401" not in document(development)["paths"]["/webhooks/upload-post"]["post"]["responses"]
    with TestClient(create_listeners(development).admin) as client:
        assert client.get("/openapi.json").status_code == 404
