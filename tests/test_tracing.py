"""One delivery's trace across real processes: the ingress, a worker, the handlers and their
HTTP calls, sent over OTLP/HTTP to a collector this test runs on 127.0.0.1 (uphooks/tracing.py).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import Stack, fixture_bodies, wait_for
from tests.plugins.servers import FakeServer

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    service: str
    attributes: dict[str, object]
    links: list[str]  # span ids


def spans(collector: FakeServer) -> Iterator[Span]:
    for seen in list(collector.requests):
        request = ExportTraceServiceRequest()
        request.ParseFromString(seen.body)
        for resource in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource.scope_spans:
                for s in scope.spans:
                    yield Span(
                        s.name,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        service,
                        {
                            a.key: getattr(a.value, a.value.WhichOneof("value"))
                            for a in s.attributes
                        },
                        [link.span_id.hex() for link in s.links],
                    )


def test_one_delivery_is_one_trace_from_the_senders_request_to_each_handler_and_its_calls(
    stack: Stack,
) -> None:
    trace_id, sender_span = secrets.token_hex(16), secrets.token_hex(8)
    with FakeServer() as collector, FakeServer() as target:
        stack.extra_env.update(
            UPHOOKS_TRACING="otlp",
            UPHOOKS_TRACING_ENDPOINT=collector.url + "/v1/traces",
            OTEL_BSP_SCHEDULE_DELAY="100",
            UPHOOKS_BUILTIN_LOG_HANDLER="false",
            UPHOOKS_FORWARD_ENABLED="true",
            UPHOOKS_FORWARD_URLS=target.url + "/hook",
            UPHOOKS_FORWARD_SECRET=SECRET,
        )
        stack.worker("tests.plugins.traced")
        ingress = stack.ingress()
        body = fixture_bodies()["upload_completed.json"]
        response = ingress.post(body, {"traceparent": f"00-{trace_id}-{sender_span}-01"})
        assert response.status_code == 202, response.text
        key = response.json()["idempotency_key"]

        def mine() -> list[Span]:
            return [s for s in spans(collector) if s.trace_id == trace_id]

        def complete() -> bool:
            names = [s.name for s in mine()]
            return names.count("uphooks.handler") >= 4 and "POST" in names

        try:
            wait_for(complete, timeout=20, what="the delivery's spans at the collector")
        except AssertionError:
            print(
                len(collector.requests), [(s.name, s.trace_id, s.service) for s in spans(collector)]
            )
            raise
        [forwarded] = target.requests

    got = mine()
    by_id = {s.span_id: s for s in got}

    def one(name: str, **attributes: object) -> Span:
        found = [
            s
            for s in got
            if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]
        assert len(found) == 1, (name, attributes, [(s.name, s.attributes) for s in got])
        return found[0]

    request = one("POST /webhooks/upload-post")
    assert request.parent == sender_span and request.service == "uphooks-ingress"
    assert request.attributes["http.response.status_code"] == 202
    assert one("uphooks.enqueue").parent == request.span_id
    claims = [s for s in got if s.name == "uphooks.claim"]
    assert claims and all(c.parent == request.span_id for c in claims)
    assert {c.service for c in claims} == {"uphooks-worker"}
    assert all(c.attributes["uphooks.delivery_key"] == key for c in claims)

    child = one("uphooks.handler", **{"uphooks.handler": "traced.child"})
    assert by_id[child.parent].name == "uphooks.claim"
    assert child.attributes["uphooks.delivery_key"] == key
    assert one("traced.lookup").parent == child.span_id

    first = one("uphooks.handler", **{"uphooks.handler": "traced.flaky", "uphooks.attempt": 1})
    second = one("uphooks.handler", **{"uphooks.handler": "traced.flaky", "uphooks.attempt": 2})
    assert by_id[second.parent].name == "uphooks.claim"  # the retry's own claim, same trace
    assert second.links == [first.span_id]

    [forward] = [
        s for s in got if s.attributes.get("uphooks.handler", "").startswith("uphooks.forward")
    ]
    call = one("POST")
    assert str(call.attributes["uphooks.call"]).startswith("forward to ")
    assert call.parent == forward.span_id
    assert forwarded.headers["traceparent"] == f"00-{trace_id}-{call.span_id}-01"
    print(f"\n{len(got)} spans in one trace: {sorted(s.name for s in got)}")


def test_tracing_is_off_by_default_and_the_record_keeps_no_trace(stack: Stack) -> None:
    ingress = stack.ingress()
    response = ingress.post(
        fixture_bodies()["upload_completed.json"],
        {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"},
    )
    key = response.json()["idempotency_key"]
    record = json.loads(stack.client().get(f"{stack.prefix}:delivery:{key}"))
    assert "trace" not in record
