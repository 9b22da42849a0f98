"""The ingress's OpenAPI 3.1 description, built from the settings it runs with.

Served at ``GET /openapi.json`` (``UPHOOKS_SERVE_OPENAPI=false`` turns it off) and fuzzed by
schemathesis in tests/test_openapi.py, so it states what the ingress enforces, no more: a JSON
object with an ``event`` name, the verification headers of the configured modes, and every status
code the ingress answers (receiver/answers.py).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from uphooks.settings import Settings

_TIMESTAMP = {"type": "string", "pattern": "^[0-9]{1,12}$"}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _version() -> str:
    try:
        return version("uphooks")
    except PackageNotFoundError:
        return "0"


def _json(schema: str) -> dict[str, Any]:
    """A JSON body of one of the document's own schemas (``components.schemas``)."""
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _answer(description: str, schema: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(schema)}
    if retry_after:
        response["headers"] = dict(_RETRY_AFTER)
    return response


def _error(description: str, *, retry: bool = False) -> dict[str, Any]:
    """A refusal: final (``Rejected``), or ``Unavailable`` with a Retry-After for the sender."""
    return _answer(description, "Unavailable" if retry else "Rejected", retry_after=retry)


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": description,
    }


def document(settings: Settings) -> dict[str, Any]:
    modes = settings.verify
    checked = modes != ["none"]
    security_schemes: dict[str, Any] = {}
    security: list[dict[str, list[str]]] = []
    parameters = [
        _header(
            "X-Upload-Post-Delivery",
            {"type": "string"},
            "The sender's delivery id, kept for de-duplication when the mode vouches for it.",
        )
    ]

    def scheme(name: str, header: str, description: str | None = None) -> None:
        """A mode's credential: one header holding a key or a signature."""
        security_schemes[name] = {"type": "apiKey", "in": "header", "name": header}
        if description is not None:
            security_schemes[name]["description"] = description
        security.append({name: []})

    if "upload-post" in modes:
        scheme(
            "uploadPost",
            "X-Upload-Post-Signature",
            'sha256=<hex HMAC-SHA256 of "<X-Upload-Post-Timestamp>." + raw body>',
        )
        parameters.append(_header("X-Upload-Post-Timestamp", _TIMESTAMP, "Unix seconds."))
    if "standard-webhooks" in modes:
        scheme(
            "standardWebhooks",
            "webhook-signature",
            "Space-separated v1,<base64 HMAC-SHA256 of id.timestamp.body>.",
        )
        parameters += [
            _header("webhook-id", {"type": "string"}, "Message id, signed."),
            _header("webhook-timestamp", _TIMESTAMP, "Unix seconds."),
        ]
    if "token" in modes:
        scheme("token", settings.token_header)

    responses: dict[str, Any] = {
        "202": _answer("Kept in the queue; it will be processed.", "Accepted"),
        "200": _answer("Already kept earlier (a retry or a replay); not queued again.", "Accepted"),
        "400": _error("Not a JSON object with an event name; final."),
        "413": _error(f"The body is over {settings.max_body_bytes} bytes; final."),
        "415": _error("Not a JSON content type; final."),
        "503": _error(
            "Not kept yet (queue down or nearly full, overloaded, or signed with a secret not "
            "configured yet); the sender retries.",
            retry=True,
        ),
    }
    responses["429"] = _answer(
        "This source sent too many requests that were refused; the sender retries after "
        "Retry-After seconds.",
        "Rejected",
        retry_after=True,
    )
    if checked:
        responses["401"] = _error("Not verified and can never be; final.")
    if settings.allowed_networks:
        responses["403"] = _error("The source address is not allowed; final.")

    delivery: dict[str, Any] = {
        "summary": "Receive one Upload-Post webhook delivery",
        "description": (
            "Answers 2xx only once the delivery is stored. The event name comes from the body's "
            "`event`; only in token and none modes, when the body has none, from the "
            "X-Upload-Post-Event header. Unknown event names are kept."
        ),
        "operationId": "receiveDelivery",
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": _json("Delivery"),
        },
        "responses": responses,
    }
    if security:
        delivery["security"] = security
    paths: dict[str, Any] = {settings.webhook_path: {"post": delivery}}
    if "token" in modes:
        by_path = {
            **delivery,
            "operationId": "receiveDeliveryWithPathToken",
            "summary": "Receive a delivery; the token is the last path segment",
            "parameters": [
                *parameters,
                {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
        }
        by_path.pop("security", None)
        paths[settings.webhook_path.rstrip("/") + "/{token}"] = {"post": by_path}
    paths["/healthz"] = {"get": _probe("The process serves requests.", "getHealth", False)}
    paths["/readyz"] = {
        "get": _probe(
            "Redis answers in time and has room (admin listener only).", "getReadiness", True
        )
    }
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document (admin listener only)",
            "operationId": "getOpenAPI",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "uphooks ingress",
            "version": _version(),
            "description": "Receives Upload-Post webhook deliveries. See docs/security.md.",
        },
        "paths": paths,
        "components": {"schemas": _SCHEMAS, "securitySchemes": security_schemes},
    }


def _probe(description: str, operation: str, may_fail: bool) -> dict[str, Any]:
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    responses: dict[str, Any] = {
        "200": {"description": description, "content": {"application/json": {"schema": status}}}
    }
    if may_fail:
        responses["503"] = {
            "description": "Not ready.",
            "content": {"application/json": {"schema": status}},
        }
    return {"summary": description, "operationId": operation, "responses": responses}


def _refusal(status: str) -> dict[str, Any]:
    """A refusal's body: its status, a machine-readable error and a sentence for people."""
    return {
        "type": "object",
        "required": ["status", "error", "detail"],
        "properties": {
            "status": {"const": status},
            "error": {"type": "string"},
            "detail": {"type": "string"},
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Delivery": {
        "type": "object",
        "required": ["event"],
        "properties": {
            "event": {"type": "string", "minLength": 1, "examples": ["upload_completed"]},
        },
        "additionalProperties": True,
    },
    "Accepted": {
        "type": "object",
        "required": ["status", "delivery_key", "idempotency_key", "duplicate"],
        "properties": {
            "status": {"enum": ["accepted", "duplicate"]},
            "delivery_key": {
                "type": "string",
                "description": "what makes two requests the same event; handlers see it as "
                "ctx.delivery_key",
            },
            "idempotency_key": {
                "type": "string",
                "description": "the same as delivery_key (its older name, kept for clients)",
                "deprecated": True,
            },
            "duplicate": {"type": "boolean"},
        },
    },
    "Rejected": _refusal("rejected"),
    "Unavailable": _refusal("unavailable"),
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)
