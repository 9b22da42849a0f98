"""OpenTelemetry traces of a delivery, from the request to each handler run. Off by default.

``UPHOOKS_TRACING=otlp`` sends spans over OTLP/HTTP (``UPHOOKS_TRACING_ENDPOINT``, else the
exporter's own ``OTEL_EXPORTER_OTLP_*`` variables); ``console`` prints them. Off, nothing of
OpenTelemetry is imported and every hook costs one check of :data:`ON`.

One delivery's trace (docs/operations.md shows one):

- ingress: ``POST <webhook path>`` (a server span; it continues an incoming ``traceparent``)
  and its child ``uphooks.enqueue``. The server span's context is kept in the delivery record
  (``"trace"``), so the workers continue the same trace however late they run.
- worker: ``uphooks.claim`` per delivery of a message (the ledger's admit or claim), a child of
  the request span; under it ``uphooks.handler`` per run, with the delivery key, handler name
  and attempt as attributes. An attempt after the first links to the first attempt's span (its
  context is kept in the pair's outcome details in the ledger).
- handlers: ``ctx.span(name)`` opens a child span (``opentelemetry.trace`` works too: the
  handler's span is the current one); the built-ins' HTTP calls are client spans that pass
  ``traceparent`` on.

Spans leave a process in batches (every ``OTEL_BSP_SCHEDULE_DELAY`` ms, 5000 by default).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from uphooks.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("uphooks.tracing")

#: True once :func:`setup` configured tracing in this process.
ON = False
_tracer: Tracer | None = None
_pid = 0
_provider: TracerProvider | None = None

Attributes = Mapping[str, str | int | float | bool]


def setup(settings: Settings, role: str) -> bool:
    """Configure tracing for this process (once per pid); returns whether it is on."""
    global ON, _tracer, _pid, _provider
    if settings.tracing == "off" or _pid == os.getpid():
        return ON
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError as exc:
        log.error(
            "UPHOOKS_TRACING=%s but OpenTelemetry is not installed (%s); install the extra: "
            "pip install 'uphooks[tracing]'. Tracing stays off.",
            settings.tracing,
            exc,
        )
        return False
    exporter: SpanExporter
    if settings.tracing == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.tracing_endpoint or None)
    resource = Resource.create(
        {"service.name": f"{settings.tracing_service_name}-{role}", "uphooks.role": role}
    )
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    # Global too, so a handler's own opentelemetry.trace.get_tracer() spans join the trace.
    trace.set_tracer_provider(_provider)
    _tracer = _provider.get_tracer("uphooks")
    _pid = os.getpid()
    ON = True
    return True


def shutdown() -> None:
    """Send what is buffered (at a clean stop)."""
    if ON and _provider is not None:
        _provider.shutdown()


def _t() -> Tracer:
    assert _tracer is not None
    return _tracer


# -- the ingress -----------------------------------------------------------------------------
@contextlib.contextmanager
def request_span(method: str, path: str, headers: Mapping[str, str]) -> Iterator[Span | None]:
    """The ingress request's server span, continuing the sender's ``traceparent``."""
    if not ON:
        yield None
        return
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    parent = extract(dict(headers))
    attributes = {"http.request.method": method, "url.path": path}
    with _t().start_as_current_span(
        f"{method} {path}", context=parent, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


def answered(span: Span | None, status: int) -> None:
    if span is not None:
        from opentelemetry.trace import StatusCode

        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(StatusCode.ERROR)


def record_fields() -> dict[str, dict[str, str]]:
    """What the delivery record keeps of the current trace ({} when off)."""
    if not ON:
        return {}
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return {"trace": carrier} if carrier else {}


# -- spans anywhere ---------------------------------------------------------------------------
@contextlib.contextmanager
def span(
    name: str, attributes: Attributes | None = None, parent: OtelContext | None = None
) -> Iterator[Span | None]:
    """A span (the current one's child, or ``parent``'s); yields None when tracing is off."""
    if not ON:
        yield None
        return
    with _t().start_as_current_span(name, context=parent, attributes=attributes) as current:
        yield current


# -- the worker -------------------------------------------------------------------------------
def claimed(
    record: Mapping[str, Any], attributes: Attributes, start_ns: int, end_ns: int
) -> OtelContext | None:
    """An ``uphooks.claim`` span over [start, end], child of the delivery's request span;
    returns the context its handler runs are children of."""
    if not ON:
        return None
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    carrier = record.get("trace")
    parent = extract(carrier) if isinstance(carrier, dict) else None
    claim = _t().start_span(
        "uphooks.claim", context=parent, attributes=attributes, start_time=start_ns
    )
    claim.end(end_time=end_ns)
    return trace.set_span_in_context(claim)


@contextlib.contextmanager
def handler_span(
    parent: OtelContext | None, attributes: Attributes, first: str = ""
) -> Iterator[str]:
    """One handler run's span; yields its ``traceparent`` (kept as the first attempt's). A
    later attempt links to the first one's span (``first``)."""
    if not ON:
        yield ""
        return
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject

    links = []
    if first:
        linked = trace.get_current_span(extract({"traceparent": first})).get_span_context()
        if linked.is_valid:
            links.append(trace.Link(linked, {"uphooks.link": "first attempt"}))
    with _t().start_as_current_span(
        "uphooks.handler", context=parent, attributes=attributes, links=links
    ):
        carrier: dict[str, str] = {}
        inject(carrier)
        yield carrier.get("traceparent", "")


@contextlib.contextmanager
def client_span(what: str, host: str, headers: dict[str, str]) -> Iterator[Span | None]:
    """An outbound HTTP call's client span; puts ``traceparent`` into ``headers``. The URL is
    not recorded (a Bot API URL holds its token), only the host."""
    if not ON:
        yield None
        return
    from opentelemetry.propagate import inject
    from opentelemetry.trace import SpanKind

    attributes = {"http.request.method": "POST", "server.address": host, "uphooks.call": what}
    with _t().start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=attributes) as s:
        inject(headers)
        yield s
