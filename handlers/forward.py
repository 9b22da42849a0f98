"""Built-in ``forward`` handler: re-POST each event to internal URLs, signed (Standard Webhooks).

An ordinary plugin with its own settings (:class:`ForwardSettings`, ``UPHOOKS_FORWARD_*``):
``_ENABLED``, ``_URLS`` (comma-separated ``https://host/path`` or ``name=https://host/path``),
``_SECRET`` (``whsec_<base64>``), ``_EVENTS``, ``_TIMEOUT_SECONDS``, ``_QUEUE``, and ``_RATE`` (a
limit per target, shared by all workers, e.g. ``20/s``; none by default). Each call is
``async def``, on the worker's event loop with one ``httpx.AsyncClient`` per process.

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
from functools import lru_cache

import httpx
from pydantic import Field, SecretStr

from handlers import _http
from handlers._settings import BuiltinSettings, CommaList, builtin_config
from handlers.context import Context
from handlers.options import Options
from handlers.rates import parse_rate
from handlers.registry import HandlerFunc, Router
from uphooks import signatures
from uphooks.errors import ConfigurationError
from uphooks.events import BaseEvent
from uphooks.settings import Settings

HANDLER_PREFIX = "uphooks.forward:"
SECRET_PREFIX = signatures.WHSEC_PREFIX
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ForwardSettings(BuiltinSettings):
    """``UPHOOKS_FORWARD_*``. The secret also signs notifications (workers/notify.py)."""

    model_config = builtin_config("UPHOOKS_FORWARD_")

    # Targets: "https://host/path" or "name=https://host/path"; each is a handler of its own.
    urls: CommaList = Field(default_factory=list)
    secret: SecretStr | None = None  # whsec_<base64>, Standard Webhooks
    events: CommaList = Field(default_factory=lambda: ["*"])
    timeout_seconds: float = 10.0
    rate: str | None = None  # per target, e.g. "20/s"


@lru_cache(maxsize=1)
def forward_settings() -> ForwardSettings:
    return ForwardSettings()


def enabled() -> bool:
    return forward_settings().enabled


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


#: The ``webhook-signature`` value for one message.
sign = signatures.standard_webhooks_signature


def forward_to(target: Target, key: bytes, timeout: float) -> HandlerFunc:
    what = f"forward to {target.name}"

    async def forward(event: BaseEvent, ctx: Context) -> None:
        body = ctx.body.encode() if ctx.body else event.model_dump_json().encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "uphooks-forward/1",
            **signatures.standard_webhooks_headers(key, ctx.pair_key, body, int(time.time())),
        }
        response = await _http.apost(what, target.url, timeout, content=body, headers=headers)
        _http.check(what, response)
        ctx.log.info("forwarded to %s: HTTP %d", target.name, response.status_code)

    forward.__qualname__ = f"forward[{target.name}]"
    return forward


def build_router(settings: Settings) -> Router:
    """The plugin's entry: built from its own settings (the core ``settings`` are not used)."""
    return router_for(forward_settings())


def router_for(settings: ForwardSettings) -> Router:
    targets = parse_targets(settings.urls)
    if not targets:
        raise ConfigurationError(
            "UPHOOKS_FORWARD_URLS is empty: the forward handler needs at least one URL"
        )
    if settings.secret is None:
        raise ConfigurationError(
            "UPHOOKS_FORWARD_SECRET is not set: forwarded events are signed; generate one with "
            "python -c \"import base64,os; print('whsec_' + base64.b64encode(os.urandom(32))"
            '.decode())"'
        )
    key = decode_secret(settings.secret.get_secret_value())
    if settings.rate is not None:
        try:
            parse_rate(settings.rate)
        except ConfigurationError as exc:
            raise ConfigurationError(f"UPHOOKS_FORWARD_RATE: {exc}") from exc
    router = Router()
    for target in targets:
        name = HANDLER_PREFIX + target.name
        options = Options(queue=settings.queue, rate=settings.rate)
        router.on(*settings.events, name=name, options=options)(
            forward_to(target, key, settings.timeout_seconds)
        )
    return router
