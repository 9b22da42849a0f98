"""``POST <webhook path>``: check a delivery, keep it in Redis, answer.

The checks run cheapest first and touch Redis only once a delivery passed them all: source
address, then the verification headers, content type and size (all before the body is read),
then the signature over the raw bytes, then JSON. A refused request leaves nothing behind.

Only what must be decided at the edge is decided here: is it a JSON object with an event name,
what is its idempotency key. Validation against the event models waits for the worker, so a
payload the models do not (yet) fit is kept and dead-lettered there instead of being refused
with a final 4xx and lost.

Nothing here logs a body or a header value: they may hold personal data and signatures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson
from redis.exceptions import OutOfMemoryError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from receiver import answers, metrics
from receiver.access import DELIVERY
from receiver.allowed_networks import Address, AllowedNetworks, parse_address
from receiver.answers import JSONResponse
from receiver.delivery_key import delivery_key
from receiver.enqueue import Enqueuer
from receiver.headroom import Headroom
from receiver.limits import (
    MAX_JSON_DEPTH,
    BadLength,
    Disconnected,
    LogThrottle,
    TooLarge,
    discard_body,
    read_body_or_disconnect,
    too_deep,
)
from receiver.replicas import NotReplicated
from receiver.throttle import RefusalBudget
from receiver.verify import Failed, Pending, Reason, Verifier
from uphooks import facts, indexes, tracing
from uphooks.settings import Settings

log = logging.getLogger("uphooks.receiver")

# Headers kept with the delivery (ctx.headers, `uphooks events show`): the sender's ids,
# timestamps and signatures, so a handler can hand the raw body to something that verifies it
# again. Not kept, since every byte is held for the whole de-duplication window: the event
# header (the record's "event" holds the name), and the content type and user agent, the same
# on every delivery (bench/memory.py: 115 of the 330 bytes headers took per delivery).
_KEPT_HEADER_PREFIXES = ("x-upload-post-", "webhook-")
_DROPPED_HEADERS = frozenset({"x-upload-post-event"})
# A signature this old on arrival was not made for this attempt (clock skew is far smaller).
_LATE_SECONDS = 600
# Modes whose proof covers the body only: nothing unsigned may add to what the body says.
_SIGNING_MODES = frozenset({"upload-post", "standard-webhooks"})


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json", "text/json", "text/plain") or media.endswith("+json")


def _late(request: Request, age: float) -> None:
    """A retry signed long before it arrived answers the open question of delivery-facts.md."""
    throttle: LogThrottle = request.app.state.log_throttle
    throttle.warn(
        log,
        "late-signature",
        "accepted a delivery signed %d s before it arrived: the sender does not refresh the "
        "signature timestamp on retries (or the clocks disagree), so "
        "UPHOOKS_VERIFY_TOLERANCE_SECONDS must stay above its retry horizon "
        "(docs/security.md)",
        age,
    )


def _refusal(request: Request, source: Source, response: JSONResponse) -> JSONResponse:
    """Every refusal goes through here: it spends the source's budget, and a throttled source
    gets 429 instead (receiver/throttle.py)."""
    budget: RefusalBudget = request.app.state.refusals
    budget.spend(source.address)
    if not source.throttled:
        return response
    throttle: LogThrottle = request.app.state.log_throttle
    throttle.warn(
        log,
        "throttled",
        "source %s is throttled: more refused requests than UPHOOKS_REFUSAL_BURST / "
        "UPHOOKS_REFUSAL_RATE_PER_SECOND allow; its refusals are answered 429",
        source.address or "?",
    )
    return answers.throttled(budget.retry_after(source.address))


@dataclass(frozen=True, slots=True)
class Source:
    address: Address | None
    throttled: bool


_PEERS: dict[str, Address | None] = {}


def _peer_address(host: str | None) -> Address | None:
    """The connecting peer's address, parsed once per address seen (a few thousand at most)."""
    if host is None:
        return None
    if host in _PEERS:
        return _PEERS[host]
    if len(_PEERS) >= 4096:
        _PEERS.clear()
    address = _PEERS[host] = parse_address(host)
    return address


def _source(request: Request) -> Source:
    networks: AllowedNetworks = request.app.state.allowed_networks
    peer = request.scope.get("client")
    host = peer[0] if peer else None
    if networks.trusted:
        address = networks.client(host, request.headers.getlist("x-forwarded-for"))
    else:  # X-Forwarded-For counts only after a trusted proxy: not even read without one
        address = _peer_address(host)
    budget: RefusalBudget = request.app.state.refusals
    return Source(address, budget.throttled(address))


def _refused(request: Request, source: Source, failure: Failed, settings: Settings) -> JSONResponse:
    response = answers.unverified(failure, settings.verify_mismatch_status)
    throttle: LogThrottle = request.app.state.log_throttle
    if not source.throttled:
        hint = ""
        if failure.reason is Reason.MISMATCH:
            hint = (
                " If the provider's signing secret was rotated, add the new one to "
                "UPHOOKS_SECRETS (keep the old one) and restart the ingress: the sender retries "
                "for ~8 h."
                if response.status_code == 503
                else " UPHOOKS_VERIFY_MISMATCH_STATUS=401 made this final."
            )
        throttle.warn(
            log,
            f"verify:{failure.reason.name}",
            "delivery refused with %d (%s, from %s): %s.%s",
            response.status_code,
            failure.reason.name.lower(),
            source.address or "?",
            failure.detail,
            hint,
        )
    return _refusal(request, source, response)


async def receive(request: Request) -> JSONResponse | None:
    """The answer to one delivery; None when the client went away before its body arrived."""
    settings: Settings = request.app.state.settings
    enqueuer: Enqueuer = request.app.state.enqueuer
    verifier: Verifier = request.app.state.verifier
    networks: AllowedNetworks = request.app.state.allowed_networks
    source = _source(request)

    if networks.active and not networks.allows_address(source.address):
        if request.app.state.log_throttle.allow("source") is not None:
            log.warning("delivery refused with 403: source address not in UPHOOKS_ALLOWED_NETWORKS")
        return _refusal(request, source, answers.forbidden_source())
    verdict = verifier.begin(request.headers, request.path_params.get("token"))
    if isinstance(verdict, Failed):
        return _refused(request, source, verdict, settings)

    content_type = request.headers.get("content-type", "")
    if not _is_json_type(content_type):
        return _refusal(request, source, answers.unsupported_media_type(content_type))
    # A throttled source may still send a delivery the size of a real one, not a large body.
    limit = settings.max_body_bytes
    if source.throttled:
        limit = min(limit, settings.throttled_body_bytes)
    try:
        body = await read_body_or_disconnect(request, limit)
    except TooLarge:
        if limit < settings.max_body_bytes:
            budget: RefusalBudget = request.app.state.refusals
            budget.spend(source.address)
            return answers.throttled(budget.retry_after(source.address), close=True)
        await discard_body(request)
        return _refusal(request, source, answers.too_large(settings.max_body_bytes))
    except BadLength:
        return answers.bad_length()
    except Disconnected:
        return None

    if isinstance(verdict, Pending):
        verdict = verdict.finish(body)
        if isinstance(verdict, Failed):
            return _refused(request, source, verdict, settings)
        if verdict.signed_at is not None and time.time() - verdict.signed_at > _LATE_SECONDS:
            _late(request, time.time() - verdict.signed_at)

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return answers.bad_request(f"the body is not valid UTF-8 JSON: {exc}")
    if not isinstance(payload, dict):
        return answers.bad_request("the body must be a JSON object")
    event = payload.get("event")
    if not event and verdict.mode not in _SIGNING_MODES:
        # Only where the caller is trusted as a whole: in a signing mode the header is unsigned,
        # and naming the event of a signed body would let anyone relabel a captured delivery.
        event = request.headers.get("x-upload-post-event")
    if not isinstance(event, str) or not event:
        return answers.bad_request("the JSON object has no 'event' name")

    if too_deep(body, payload):
        return answers.bad_request(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")

    key = delivery_key(verdict.delivery_id, payload)
    token_header = settings.token_header.lower()
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.startswith(_KEPT_HEADER_PREFIXES)
        and name not in _DROPPED_HEADERS
        and name != token_header
    }
    # The delivery key is not repeated inside: the record is stored under it (uphooks/keys.py).
    record = orjson.dumps(
        {
            "event": event,
            "received_at": round(time.time(), 3),
            "headers": headers,
            "body": body.decode("utf-8"),
            **tracing.record_fields(),
        }
    )
    # A resent delivery we already keep is refused too: telling it apart takes a Redis round
    # trip per refused request, just when Redis is the scarce part; its next attempt gets 200.
    headroom: Headroom = request.app.state.headroom
    if not headroom.admit(len(record)):
        metrics.refused_redis_full()
        return answers.redis_full()
    try:
        # The Enqueuer gives up after ack_timeout_seconds by itself (one timer for all requests).
        fact = facts.spec(facts.webhook_facts(payload))
        terms = indexes.receipt_terms(event, payload)
        if tracing.ON:
            with tracing.span("uphooks.enqueue", {"uphooks.delivery_key": key}):
                is_new = await enqueuer.submit(key, record, fact, terms)
        else:
            is_new = await enqueuer.submit(key, record, fact, terms)
    except NotReplicated as exc:
        metrics.enqueue_failed("replicas")
        log.warning("answered 503: %s", exc)
        return answers.not_replicated(str(exc))
    except TimeoutError:
        metrics.enqueue_failed("timeout")
        log.warning("redis did not answer in %.1fs; answered 503", settings.ack_timeout_seconds)
        return answers.unavailable("the queue did not answer in time; retry later")
    except OutOfMemoryError:
        # Past maxmemory before our reading showed it (another writer, a burst from other
        # ingress processes): Redis refused the whole script, nothing was kept.
        headroom.redis_refused()
        metrics.enqueue_failed("oom")
        throttle: LogThrottle = request.app.state.log_throttle
        throttle.warn(
            log,
            "oom",
            "redis refused a delivery for lack of memory (answered 503): its used memory "
            "passed maxmemory before UPHOOKS_REDIS_MEMORY_LIMIT_RATIO stopped the ingress; "
            "lower the ratio or the poll interval (docs/operations.md, 'Redis near full')",
        )
        return answers.redis_full()
    except Exception as exc:
        metrics.enqueue_failed("error")
        log.warning("enqueue failed, answered 503: %s", exc)
        return answers.unavailable("the queue is unavailable; retry later")
    if not is_new:
        metrics.duplicate()
    # The access line names it: the first line of the delivery's trail (receiver/access.py).
    request.scope[DELIVERY] = (key, event, is_new)
    return answers.accepted(key) if is_new else answers.duplicate(key)


class Endpoint:
    """The webhook route. receiver/gate.py calls :meth:`answer` directly for a delivery; as an
    ASGI app (Starlette's ``Route``) it answers the same way."""

    async def answer(self, scope: Scope, receive_: Receive) -> JSONResponse | None:
        request = Request(scope, receive_)
        if tracing.ON:
            return await _traced(request)
        return await receive(request)

    async def __call__(self, scope: Scope, receive_: Receive, send: Send) -> None:
        response = await self.answer(scope, receive_)
        if response is not None:
            await response(scope, receive_, send)


async def _traced(request: Request) -> JSONResponse | None:
    # The route, not the URL: a path token must not reach the traces.
    path = request.app.state.settings.webhook_path
    with tracing.request_span("POST", path, request.headers) as span:
        response = await receive(request)
        tracing.answered(span, response.status_code if response is not None else 499)
    return response
