"""Built-in ``forward`` handler: re-POST each event to internal URLs, signed (Standard Webhooks).

Settings: ``UPHOOKS_FORWARD_ENABLED``, ``_URLS`` (comma-separated ``https://host/path`` or
``name=https://host/path``), ``_SECRET`` (``whsec_<base64>``), ``_EVENTS``, ``_TIMEOUT_SECONDS``.

Each target is a handler of its own, named ``uphooks.forward:<name>`` (the name defaults to the
URL's host and path), so one target being down does not hold back or repeat the others. The body
is the event exactly as Upload-Post sent it. Headers follow the Standard Webhooks spec:

- ``webhook-id``: ``ctx.pair_key``, the same on every retry (receivers de-duplicate on it);
- ``webhook-timestamp``: unix seconds of this attempt;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed with the
  base64-decoded part of the secret after ``whsec_``.

Timeouts, connection failures, 408, 429 and 5xx are retried with backoff; any other 4xx (or a
redirect) is permanent and dead-letters the event for that target.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx

from handlers import _http
from handlers.context import Context
from handlers.options import Options
from handlers.registry import HandlerFunc, Router
from uphooks import signatures
from uphooks.errors import ConfigurationError
from uphooks.events import BaseEvent
from uphooks.settings import Settings

HANDLER_PREFIX = "uphooks.forward:"
SECRET_PREFIX = signatures.WHSEC_PREFIX
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Target:
    name: str
    url: str


def parse_targets(entries: list[str]) -> list[Target]:
    targets: list[Target] = []
    for entry in entries:
        label, sep, rest = entry.partition("=")
        if sep and _LABEL.match(label) and rest.startswith(("http://", "https://")):
            name, url = label, rest
        else:
            url = entry
            parsed = httpx.URL(url)
            name = f"{parsed.netloc.decode()}{parsed.path.rstrip('/')}"
        if httpx.URL(url).scheme not in ("http", "https") or not httpx.URL(url).host:
            raise ConfigurationError(
                f"UPHOOKS_FORWARD_URLS: {entry!r} is not an http(s) URL (give 'url' or 'name=url')"
            )
        if any(t.name == name for t in targets):
            raise ConfigurationError(
                f"UPHOOKS_FORWARD_URLS: two targets are named {name!r}; name them: 'name=url'"
            )
        targets.append(Target(name, url))
    return targets


def decode_secret(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigurationError(
            f"UPHOOKS_FORWARD_SECRET must look like {SECRET_PREFIX}<base64>, as Standard "
            "Webhooks secrets do"
        )
    key = signatures.decode_whsec(secret)
    if key is None:
        raise ConfigurationError(
            "UPHOOKS_FORWARD_SECRET: the part after whsec_ is not valid base64"
        )
    if len(key) < 16:
        raise ConfigurationError("UPHOOKS_FORWARD_SECRET: use at least 16 random bytes (24-64)")
    return key


#: The ``webhook-signature`` value for one message (kept here for workers/notify.py).
sign = signatures.standard_webhooks_signature


def forward_to(target: Target, key: bytes, timeout: float) -> HandlerFunc:
    what = f"forward to {target.name}"

    def forward(event: BaseEvent, ctx: Context) -> None:
        body = ctx.body.encode() if ctx.body else event.model_dump_json().encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "uphooks-forward/1",
            **signatures.standard_webhooks_headers(key, ctx.pair_key, body, int(time.time())),
        }
        response = _http.post(what, target.url, timeout, content=body, headers=headers)
        _http.check(what, response)
        ctx.log.info("forwarded to %s: HTTP %d", target.name, response.status_code)

    forward.__qualname__ = f"forward[{target.name}]"
    return forward


def build_router(settings: Settings) -> Router:
    targets = parse_targets(settings.forward_urls)
    if not targets:
        raise ConfigurationError(
            "UPHOOKS_FORWARD_URLS is empty: the forward handler needs at least one URL"
        )
    if settings.forward_secret is None:
        raise ConfigurationError(
            "UPHOOKS_FORWARD_SECRET is not set: forwarded events are signed; generate one with "
            "python -c \"import base64,os; print('whsec_' + base64.b64encode(os.urandom(32))"
            '.decode())"'
        )
    key = decode_secret(settings.forward_secret.get_secret_value())
    router = Router()
    for target in targets:
        router.on(
            *settings.forward_events,
            name=HANDLER_PREFIX + target.name,
            options=Options(queue=settings.forward_queue),
        )(forward_to(target, key, settings.forward_timeout_seconds))
    return router
